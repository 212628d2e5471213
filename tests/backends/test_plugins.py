"""Backends as plugins: a third-party package adds one through the entry point.

The toy package is installed for real the way pip leaves any package: a module
and a ``*.dist-info`` directory (METADATA, entry_points.txt) in a directory on
the path, which :mod:`importlib.metadata` finds. Its backend is a ridge
regression of a quadratic pair potential (forces are minus its gradient).
"""

import json
import logging
import os
import subprocess
import sys
import textwrap
from importlib import metadata

import numpy as np
import pytest

from ase_flatten.backends import (
    BACKENDS,
    GROUP,
    available_backends,
    backend_class,
    load_backends,
)
from ase_flatten.exceptions import InputError
from ase_flatten.testing import BackendTests
from tests.test_cli import assert_one_line_error, run_cli

TOY_MODULE = '''
"""A third-party backend: a quadratic pair potential fitted by ridge regression."""

import numpy as np

from ase_flatten.backends import Backend
from ase_flatten.backends.parameters import Real


class PairBackend(Backend):
    """E = sum over atom pairs of (a_p r + b_p r^2) + c, fitted to E and F."""

    name = "toy"
    extra = "toy"
    defaults = {"alpha": 1e-8}
    parameter_constraints = {"alpha": [Real(0)]}

    @staticmethod
    def _features(positions):
        """Features x = (r, r^2) per pair (M, 2P) and dx/dR (M, 2P, N, 3)."""
        n_atoms = positions.shape[1]
        i, j = np.triu_indices(n_atoms, 1)
        diff = positions[:, i] - positions[:, j]
        r = np.linalg.norm(diff, axis=-1)
        unit = diff / r[..., None]
        pairs = np.arange(len(i))
        features, gradients = [], []
        for x, dx_dr in ((r, np.ones_like(r)), (r**2, 2 * r)):
            grad = np.zeros((*r.shape, n_atoms, 3))
            grad[:, pairs, i] = dx_dr[..., None] * unit
            grad[:, pairs, j] = -dx_dr[..., None] * unit
            features.append(x)
            gradients.append(grad)
        return np.concatenate(features, 1), np.concatenate(gradients, 1)

    def _fit(self, dataset, train_idx, val_idx):
        x, grad = self._features(dataset.positions[train_idx])
        n = x.shape[1]
        energy_rows = np.hstack([x, np.ones((len(x), 1))])
        force_rows = -grad.transpose(0, 2, 3, 1).reshape(-1, n)
        force_rows = np.hstack([force_rows, np.zeros((len(force_rows), 1))])
        ridge = np.sqrt(self.params["alpha"]) * np.eye(n + 1)
        a = np.vstack([energy_rows, force_rows, ridge])
        b = np.concatenate(
            [dataset.energies[train_idx], dataset.forces[train_idx].ravel(),
             np.zeros(n + 1)]
        )
        self.weights_ = np.linalg.lstsq(a, b, rcond=None)[0]

    def _predict(self, positions):
        x, grad = self._features(positions)
        energies = x @ self.weights_[:-1] + self.weights_[-1]
        forces = -np.einsum("mpna,p->mna", grad, self.weights_[:-1])
        return energies, forces

    def _save(self, directory):
        np.save(directory / "weights.npy", self.weights_)

    def _load(self, directory):
        self.weights_ = np.load(directory / "weights.npy", allow_pickle=False)


def not_a_backend():
    return None
'''

ENTRY_POINTS = """
[ase_flatten.backends]
toy = toy_backend:PairBackend
broken = toy_broken:Backend
notaclass = toy_backend:not_a_backend
sgdml = toy_backend:PairBackend
"""


@pytest.fixture(scope="module")
def plugin_dir(tmp_path_factory):
    """A directory holding the installed toy package ``toy-backends 0.1``."""
    root = tmp_path_factory.mktemp("site")
    (root / "toy_backend.py").write_text(textwrap.dedent(TOY_MODULE))
    (root / "toy_broken.py").write_text("import a_module_nobody_installed\n")
    info = root / "toy_backends-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: toy-backends\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(ENTRY_POINTS)
    return root


@pytest.fixture
def installed(plugin_dir, monkeypatch):
    """The toy package importable and its entry points visible (this test only)."""
    import ase_flatten.backends

    monkeypatch.syspath_prepend(str(plugin_dir))
    monkeypatch.setattr(ase_flatten.backends, "_warned", set())
    yield plugin_dir
    for name in ("toy_backend", "toy_broken"):
        sys.modules.pop(name, None)


def test_built_in_backends_are_registered_in_the_entry_point_group():
    ours = {
        ep.name: ep.value
        for ep in metadata.entry_points(group=GROUP)
        if ep.dist is not None and ep.dist.metadata["Name"] == "ase-flatten"
    }
    assert ours == BACKENDS


def test_a_plugin_is_listed_without_importing_it(installed):
    names = available_backends()
    assert names[: len(BACKENDS)] == list(BACKENDS)
    assert {"toy", "broken", "notaclass"} <= set(names)
    assert names.count("sgdml") == 1  # a plugin cannot take a built-in name
    assert "toy_backend" not in sys.modules and "toy_broken" not in sys.modules
    cls = backend_class("toy")
    assert cls.__module__ == "toy_backend" and cls.name == "toy"
    assert backend_class("sgdml").__module__ == "ase_flatten.backends.sgdml"


@pytest.fixture(scope="class")
def toy_package(plugin_dir):
    """The toy package installed for a whole test class."""
    import ase_flatten.backends

    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(plugin_dir))
        patch.setattr(ase_flatten.backends, "_warned", set())
        yield plugin_dir
    for name in ("toy_backend", "toy_broken"):
        sys.modules.pop(name, None)


@pytest.mark.usefixtures("toy_package")
class TestToyBackendContract(BackendTests):
    """The plugin passes the contract a plugin author runs (on EMT frames)."""

    backend = "toy"
    params = {"alpha": 1e-8}
    max_force_rmse_share = 0.6
    max_energy_rmse = 0.2
    gradient_atol = 1e-6
    bad_params = [({"alpha": -1.0}, "toy: parameter alpha must be a number >= 0")]


def test_a_broken_plugin_warns_once_and_spares_the_others(installed, caplog):
    with caplog.at_level(logging.WARNING, logger="ase_flatten.backends"):
        classes = load_backends()
    assert classes["toy"].name == "toy"
    assert "broken" not in classes and "notaclass" not in classes
    lines = [r.getMessage() for r in caplog.records]
    broken = [m for m in lines if "'broken'" in m]
    assert len(broken) == 1
    assert "toy_broken:Backend" in broken[0] and "toy-backends 0.1" in broken[0]
    assert "ModuleNotFoundError" in broken[0]
    assert any("'notaclass'" in m and "not a subclass" in m for m in lines)
    assert any("'sgdml'" in m and "built-in" in m for m in lines)
    with pytest.raises(InputError, match="unknown backend 'nope'; choose one of"):
        backend_class("nope")


@pytest.mark.slow
def test_train_and_select_with_the_plugin(installed, xtb_files, tmp_path, capsys):
    reference, _ = xtb_files
    clusters = ["--n-geometry", "3", "--n-energy", "2"]
    status, _, err = run_cli(
        capsys, "train", reference, "--backend", "toy", "--size", "40",
        *clusters, "-o", tmp_path / "model",
    )  # fmt: skip
    assert status == 0, err
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["backend"] == "toy" and meta["params"] == {"alpha": 1e-8}
    assert (tmp_path / "model" / "model" / "weights.npy").is_file()
    loop = ["--backend", "toy", "--init", "20", "--step", "8", "--iterations", "2",
            "--n-fine", "12", *clusters]  # fmt: skip
    picked = []
    for run in ("a", "b"):
        status, _, err = run_cli(
            capsys, "select", reference, *loop, "-o", tmp_path / run
        )
        assert status == 0, err
        picked.append(np.load(tmp_path / run / "train_indices.npy"))
    assert len(picked[0]) == 36 and len(np.unique(picked[0])) == 36
    np.testing.assert_array_equal(picked[0], picked[1])
    status, _, err = run_cli(
        capsys, "train", reference, "--backend", "broken", "--size", "40",
        "-o", tmp_path / "never",
    )  # fmt: skip
    assert_one_line_error(status, err, "backend plugin 'broken'", "toy-backends 0.1")


@pytest.mark.slow
def test_the_installed_command_finds_the_plugin(plugin_dir, xtb_files, tmp_path):
    """The real console script in a fresh process, the package on PYTHONPATH."""
    reference, _ = xtb_files
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    script = os.path.join(os.path.dirname(sys.executable), "ase-flatten")
    clusters = ["--n-geometry", "3", "--n-energy", "2"]
    command = [script, "train", reference, "--backend", "toy", "--size", "30",
               *clusters, "-o", tmp_path / "m"]  # fmt: skip
    command = [str(c) for c in command]
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads((tmp_path / "m" / "model.json").read_text())["backend"] == "toy"
    # building the command line lists the plugin and imports no model library
    code = (
        "import sys; from ase_flatten.cli.main import build_parser; "
        "p = build_parser(); "
        "print(sorted(m for m in ('torch', 'mace', 'sgdml', 'toy_backend') "
        "if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
