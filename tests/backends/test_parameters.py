"""Backend hyperparameters: declared once per backend, checked once in Backend."""

import json

import pytest

from ase_flatten.backends import BACKENDS, backend_class, make_backend
from ase_flatten.backends.parameters import (
    Boolean,
    Integer,
    ListOf,
    Options,
    Real,
    check_parameters,
)
from ase_flatten.exceptions import InputError


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_every_default_has_a_constraint_and_satisfies_it(name):
    cls = backend_class(name)
    assert set(cls.parameter_constraints) == set(cls.defaults)
    # the defaults survive a JSON round trip (model.json, -p) and are accepted
    check_parameters(
        name, json.loads(json.dumps(cls.defaults)), cls.parameter_constraints
    )


@pytest.mark.parametrize(
    "name, params, message",
    [
        (
            "sgdml",
            {"use_sym": "maybe"},
            "sgdml: parameter use_sym must be true or false, got 'maybe'",
        ),
        (
            "sgdml",
            {"lam": "abc"},
            "sgdml: parameter lam must be a number > 0, got 'abc'",
        ),
        ("sgdml", {"lam": 0.0}, "sgdml: parameter lam must be a number > 0, got 0.0"),
        (
            "sgdml",
            {"sigma": 2.5},
            "sgdml: parameter sigma must be an integer >= 1 or null, got 2.5",
        ),
        (
            "sgdml",
            {"sigma_grid": []},
            "sigma_grid must be a non-empty list, each an integer >= 1, got []",
        ),
        ("sgdml", {"sigma_grid": [10, -5]}, "sigma_grid must be a non-empty list"),
        ("sgdml", {"use_sym": 1}, "use_sym must be true or false, got 1"),
        (
            "sgdml",
            {"sigmaa": 3},
            "unknown parameter 'sigmaa' (known: lam, max_memory_gb, n_valid, sigma",
        ),
        (
            "schnet",
            {"energy_weight": 1.0},
            "schnet: parameter energy_weight must be a number in (0, 1), got 1.0",
        ),
        (
            "schnet",
            {"lr": float("inf")},
            "schnet: parameter lr must be a number > 0, got inf",
        ),
        (
            "schnet",
            {"n_valid": True},
            "schnet: parameter n_valid must be an integer >= 1 or null, got True",
        ),
        (
            "gap",
            {"l_max": 21},
            "gap: parameter l_max must be an integer in [0, 20], got 21",
        ),
        (
            "gap",
            {"sparse_method": "kmeans"},
            "must be one of cur_points, cur_covariance, random, got 'kmeans'",
        ),
        (
            "gap",
            {"cutoff": 2.0, "cutoff_transition_width": 2.0},
            "cutoff_transition_width (2.0) must be smaller than cutoff (2.0)",
        ),
        (
            "ase",
            {"factory": "nocolon"},
            "ase: parameter factory must be a 'module:callable' string or null",
        ),
    ],
)
def test_bad_values_name_backend_parameter_and_value(name, params, message):
    with pytest.raises(InputError) as info:
        make_backend(name, **params)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{name}: ")


def test_good_values_are_kept_as_given():
    backend = make_backend("sgdml", sigma=20, lam=1e-8, use_sym=False, max_memory_gb=2)
    assert backend.params["sigma"] == 20 and backend.params["use_sym"] is False
    assert (
        make_backend("schnet", device="cuda:1", n_valid=None).params["device"]
        == "cuda:1"
    )


def test_constraint_bounds():
    assert Real(0, 1, closed="left").accepts(0) and not Real(0, 1, "left").accepts(1)
    assert Real(0, 1, closed="right").accepts(1) and not Real(0, 1, "right").accepts(0)
    assert not Real().accepts(float("nan")) and not Real().accepts(True)
    assert Integer(0, 2).accepts(2) and not Integer(0, 2).accepts(3)
    assert not Integer().accepts(2.0) and not Integer().accepts(False)
    assert Boolean().accepts(False) and not Boolean().accepts("false")
    assert Options(("a", "b")).accepts("b") and not Options(("a", "b")).accepts(["a"])
    assert ListOf(Integer(1)).accepts((1, 2)) and not ListOf(Integer(1)).accepts("12")
