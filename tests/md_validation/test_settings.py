"""RunSettings: one frozen, checked description of a run for both engines."""

import dataclasses

import pytest

from ase_flatten.exceptions import InputError
from md_validation.failure import FailureCriteria
from md_validation.settings import RunSettings


def test_defaults_per_engine_and_frozen():
    assert RunSettings().thermostat == "langevin"
    ipi = RunSettings(engine="ipi", criteria=None)
    assert ipi.thermostat == "svr" and ipi.criteria == FailureCriteria()
    assert ipi.time_ps(2000) == pytest.approx(1.0)
    assert ipi.describe() == {
        "engine": "ipi", "thermostat": "svr", "temperature_K": 300.0,
        "timestep_fs": 0.5, "seed": 0, "stride": 10, "tau_fs": 100.0,
    }  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        ipi.seed = 1


@pytest.mark.parametrize(
    "change, message",
    [
        ({"engine": "lammps"}, "unknown engine 'lammps'"),
        ({"thermostat": "berendsen"}, "unknown thermostat 'berendsen' for engine ase"),
        ({"n_steps": 0}, "n_steps and stride must be >= 1"),
        ({"timestep_fs": -0.5}, "timestep and temperature positive"),
    ],
)
def test_bad_settings_are_one_input_error(change, message):
    with pytest.raises(InputError, match=message):
        RunSettings(**change)
