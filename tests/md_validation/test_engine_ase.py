import numpy as np
import pytest
from ase.calculators.emt import EMT

from ase_flatten.calculator import FlattenedCalculator
from md_validation import COLUMNS, run_md
from md_validation.result import read_record
from tests.md_validation.conftest import Broken


@pytest.mark.slow
def test_nve_conserves_total_energy(sgdml_model, start_atoms, tmp_path):
    result = run_md(
        sgdml_model, start_atoms, 300, 400, thermostat="nve", outdir=tmp_path
    )
    assert not result.failed and result.steps_done == 400
    total = result.record["total_eV"]
    assert len(total) == 401
    assert np.ptp(total) < 0.01  # eV, 0.2 ps at 0.5 fs
    assert np.ptp(result.record["potential_eV"]) > 0.1  # it did move
    np.testing.assert_allclose(result.record["conserved_eV"], total)
    saved = read_record(tmp_path / "thermo.csv")
    np.testing.assert_allclose(saved["total_eV"], total, rtol=1e-8)
    assert (tmp_path / "trajectory.extxyz").exists()


@pytest.mark.slow
@pytest.mark.parametrize("thermostat", ["langevin", "bussi"])
def test_nvt_temperature_and_conserved_quantity(thermostat, start_atoms):
    """EMT copper cluster: cheap; T averages to the target, conserved stays flat."""
    from ase.cluster import Icosahedron

    atoms = Icosahedron("Cu", 2)
    result = run_md(
        EMT, atoms, 500.0, 3000, timestep_fs=2.0, thermostat=thermostat, tau_fs=50.0
    )
    assert not result.failed
    temperature = result.record["temperature_K"][500:].mean()
    assert 400 < temperature < 600
    total, conserved = result.record["total_eV"], result.record["conserved_eV"]
    assert np.ptp(conserved) < 0.2 * np.ptp(total)


def test_seeded_replicas_reproduce(sgdml_model, start_atoms):
    a = run_md(sgdml_model, start_atoms, 300, 50, seed=3)
    b = run_md(sgdml_model, start_atoms, 300, 50, seed=3)
    c = run_md(sgdml_model, start_atoms, 300, 50, seed=4)
    np.testing.assert_array_equal(a.record["total_eV"], b.record["total_eV"])
    assert not np.array_equal(a.record["total_eV"], c.record["total_eV"])


@pytest.mark.parametrize("mode", ["nan", "explode"])
def test_broken_model_fails_early_with_its_time(
    mode, sgdml_model, start_atoms, tmp_path
):
    def factory():
        return Broken(FlattenedCalculator(sgdml_model), after=41, mode=mode)

    result = run_md(factory, start_atoms, 300, 2000, outdir=tmp_path)
    assert result.failed
    assert result.steps_done < 200  # stopped early
    # call 1 is step 0, so step 41 is the first broken one
    if mode == "nan":
        assert result.failure_time_ps == pytest.approx(41 * 0.5e-3)
        assert "non-finite energy" in result.failure_reason
    else:
        assert 41 * 0.5e-3 < result.failure_time_ps < 0.1
    assert len(result.record["step"]) == result.steps_done + 1
    assert set(result.record) == set(COLUMNS)
    assert (tmp_path / "run.json").exists()


def test_bad_engine_and_thermostat(start_atoms):
    from ase_flatten.exceptions import InputError

    with pytest.raises(InputError, match="unknown engine"):
        run_md(EMT, start_atoms, 300, 10, engine="lammps")
    with pytest.raises(InputError, match="unknown thermostat"):
        run_md(EMT, start_atoms, 300, 10, thermostat="berendsen")


@pytest.mark.parametrize("after", [0, 41])
def test_model_that_raises_is_a_failed_run(after, sgdml_model, start_atoms, tmp_path):
    """At step 0 (the first energy) or inside an integrator step (its forces)."""

    def factory():
        return Broken(FlattenedCalculator(sgdml_model), after=after, mode="raise")

    result = run_md(factory, start_atoms, 300, 2000, outdir=tmp_path)
    assert result.failed
    assert result.failure_reason == (
        "model error: RuntimeError: model exploded on purpose"
    )
    assert result.failure_time_ps == pytest.approx(after * 0.5e-3)
    assert result.steps_done == after
    # the record ends at the last step with an energy
    np.testing.assert_array_equal(result.record["step"], np.arange(after))
    assert np.isfinite(result.record["potential_eV"]).all()
    assert read_record(tmp_path / "thermo.csv")["step"].shape == (after,)
    assert (tmp_path / "trajectory.extxyz").exists() == (after > 0)


@pytest.mark.slow
def test_validation_goes_on_after_a_model_error(sgdml_model, start_atoms, tmp_path):
    from md_validation.replicas import ModelSpec
    from md_validation.workflow import Protocol, validate_models

    broken = ModelSpec(
        "broken",
        factory="tests.md_validation.conftest:broken_model",
        kwargs={"model": str(sgdml_model), "after": 5},
    )
    rows, _ = validate_models(
        {"broken": broken, "good": sgdml_model},
        start_atoms,
        tmp_path,
        Protocol(temperatures=[300], n_steps=20, replicas=2),
    )
    failed = {
        (r["model"], r["replica"]): r["failure_reason"] for r in rows if r["failed"]
    }
    assert failed == {
        ("broken", k): "model error: RuntimeError: model exploded on purpose"
        for k in (0, 1)
    }
    assert [r["steps_done"] for r in rows if r["model"] == "good"] == [20, 20]


def test_a_replica_logs_its_progress_off_a_terminal(caplog):
    """Off a terminal a long replica was silent: it logs where it is every
    log_every_ps of simulated time (EMT copper, 60 steps of 0.5 fs, every
    0.01 ps = 20 steps: at 20 and 40, not at the end)."""
    import logging

    from ase.cluster import Icosahedron

    with caplog.at_level(logging.INFO, logger="md_validation"):
        run_md(EMT, Icosahedron("Cu", 2), 300.0, 60, label="cu #0", log_every_ps=0.01)
    lines = [r.getMessage() for r in caplog.records if "steps/s" in r.getMessage()]
    lines = [line for line in lines if "left" in line]
    assert [line.split(",")[0] for line in lines] == [
        "cu #0: 0.01 of 0.03 ps (20/60 steps)",
        "cu #0: 0.02 of 0.03 ps (40/60 steps)",
    ]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="md_validation"):
        run_md(EMT, Icosahedron("Cu", 2), 300.0, 60, label="cu #1")
    assert not [r for r in caplog.records if "left" in r.getMessage()]


def test_the_log_interval_reaches_every_replica(tmp_path, start_atoms):
    """Protocol.log_every_ps goes to every task, and not into the run settings
    a resumed run compares."""
    from md_validation.replicas import ModelSpec
    from md_validation.workflow import Protocol, _tasks

    protocol = Protocol(temperatures=[300.0], replicas=2, log_every_ps=0.5)
    tasks = _tasks([ModelSpec("m", path="x")], start_atoms, tmp_path, protocol, None)
    assert [t.log_every_ps for t in tasks] == [0.5, 0.5]
    # one settings object per run: the protocol's, with its temperature and seed
    assert [t.settings.seed for t in tasks] == [0, 1]
    assert {t.settings.temperature_K for t in tasks} == {300.0}
    assert all(t.settings.stride == protocol.run.stride for t in tasks)


@pytest.mark.slow
def test_a_dead_worker_process_is_a_run_error(sgdml_model, start_atoms, tmp_path):
    from ase_flatten.exceptions import InputError, RunError
    from md_validation.replicas import ModelSpec
    from md_validation.workflow import Protocol, validate_models

    dying = ModelSpec(
        "dying",
        factory="tests.md_validation.conftest:broken_model",
        kwargs={"model": str(sgdml_model), "after": 2, "mode": "die"},
    )
    with pytest.raises(RunError, match="1 of 1 runs did not finish") as info:
        validate_models(
            {"dying": dying},
            start_atoms,
            tmp_path,
            Protocol(temperatures=[300], n_steps=10, replicas=1),
        )
    assert "worker process died" in str(info.value)
    assert "call validate_models again with the same outdir" in str(info.value)
    assert not isinstance(info.value, InputError)  # not the user's mistake
