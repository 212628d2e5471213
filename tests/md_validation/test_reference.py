"""The reference method's own MD: averages with CIs, distance-distribution JS."""

import json

import numpy as np
import pytest
from ase.calculators.calculator import Calculator, all_changes
from scipy import stats

from md_validation.cli import main
from md_validation.reference import (
    DISTANCE_BINS,
    difference_ci,
    distance_histogram,
    js_divergence,
    mean_ci,
)
from md_validation.replicas import ModelSpec
from md_validation.settings import RunSettings
from md_validation.workflow import Protocol, validate_models
from tests.test_cli import assert_one_line_error
from tests.test_cli import run_cli as run_cli_with

XTB = "tblite.ase:TBLite"
GFN2 = {"method": "GFN2-xTB", "verbosity": 0}


class Stretched(Calculator):
    """A deliberately wrong but stable model: GFN2-xTB of the molecule shrunk by
    ``factor`` about its centre, so every bond comes out 1/factor too long."""

    implemented_properties = ["energy", "free_energy", "forces"]

    def __init__(self, factor=0.95):
        from tblite.ase import TBLite

        super().__init__()
        self.factor, self.xtb = factor, TBLite(**GFN2)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        work = self.atoms.copy()
        centre = work.positions.mean(axis=0)
        work.positions = centre + self.factor * (work.positions - centre)
        work.calc = self.xtb
        energy = work.get_potential_energy()
        forces = self.factor * work.get_forces()
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}


def test_statistics_by_hand():
    samples = np.array([1.0, 2.0, 4.0])
    mean, low, high = mean_ci(samples)
    expected = stats.t.interval(0.95, 2, loc=7 / 3, scale=stats.sem(samples))
    assert mean == pytest.approx(7 / 3) and (low, high) == pytest.approx(expected)
    assert np.isnan(mean_ci([5.0])[1])
    # below the minimum: the mean, no interval (two samples are 12.7 SE wide)
    assert mean_ci([290.0, 310.0], min_samples=3)[0] == 300.0
    assert np.isnan(mean_ci([290.0, 310.0], min_samples=3)[1])
    assert difference_ci([1.0, 2.0], [0.0, 1.0, 2.0], min_samples=3)[0] == 0.5
    assert np.isnan(difference_ci([1.0, 2.0], [0.0, 1.0, 2.0], min_samples=3)[1])
    a, b = np.array([1.0, 2.0, 3.0, 4.0]), np.array([0.0, 0.5, 1.0])
    diff, low, high = difference_ci(a, b)
    welch = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert diff == pytest.approx(2.0) and (low, high) == pytest.approx(tuple(welch))
    # two atoms 1.02 Å apart, then 1.52 Å: bins 20 and 30 of 0.05 Å
    frames = [np.array([[0, 0, 0], [0, 0, 1.02]]), np.array([[0, 0, 0], [1.52, 0, 0]])]
    counts = distance_histogram(frames)
    assert counts.sum() == 2 and counts[20] == 1 and counts[30] == 1
    assert len(counts) == len(DISTANCE_BINS) - 1
    assert distance_histogram([np.array([[0, 0, 0], [0, 0, 25.0]])])[-1] == 1
    # disjoint histograms: 1 bit; identical: 0; p = (1/2, 1/2) vs (1, 0): by hand
    assert js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert js_divergence([2, 3], [4, 6]) == pytest.approx(0.0, abs=1e-12)
    by_hand = 0.5 * (0.5 * np.log2(2 / 3) + 0.5 * np.log2(2.0) + np.log2(4 / 3))
    assert js_divergence([1, 1], [1, 0]) == pytest.approx(by_hand)


def _quantity(mean, replicas, low=None, high=None):
    from md_validation.reference import too_few_text

    entry = {"mean": mean, "ci95": [low, high]}
    if low is None:
        entry["ci_note"] = too_few_text(replicas)
    return entry


def test_reference_lines_give_an_interval_only_from_enough_replicas():
    """A 2-replica temperature interval of [-120, 733] K is not printed: the line
    says there are too few replicas; from 3 replicas on the interval is there."""
    from md_validation.reference import MIN_REPLICAS_FOR_INTERVAL, reference_lines

    assert MIN_REPLICAS_FOR_INTERVAL == 3

    def table(n, ci):
        both = dict(low=ci[0], high=ci[1]) if ci else {}
        return {
            "300": {
                "reference": dict(
                    self_js_divergence=0.003,
                    temperature_K=_quantity(306.0, n, *(ci or ())),
                ),
                "models": {
                    "m": dict(
                        frames=100,
                        js_divergence=0.004,
                        potential_energy_eV_minus_reference=_quantity(
                            0.01, n, **({"low": -0.02, "high": 0.04} if ci else {})
                        ),
                        temperature_K=_quantity(
                            305.0, n, **({k: v - 1 for k, v in both.items()})
                        ),
                    )
                },
            }
        }

    (few,) = reference_lines(table(2, None))
    assert few == (
        "300 K: m vs reference MD: JS divergence of distances 0.0040 bits (reference "
        "vs itself 0.0030), mean potential energy +0.010 eV (too few replicas for an "
        "interval (2 < 3)), mean temperature 305 K (too few replicas for an interval "
        "(2 < 3)) vs 306 K (too few replicas for an interval (2 < 3))"
    )
    assert "-120" not in few
    (enough,) = reference_lines(table(4, (290.0, 322.0)))
    assert "mean potential energy +0.010 eV (95 % CI -0.020 to +0.040 eV)" in enough
    assert enough.endswith(
        "mean temperature 305 K (95 % CI 289 to 321 K) vs 306 K (95 % CI 290 to 322 K)"
    )


@pytest.mark.slow
def test_wrong_model_is_far_from_the_reference(tmp_path, start_atoms, xtb_dataset):
    """GFN2-xTB as a model is as close to the reference as the reference is to
    itself with other seeds; a stable model with 5 % long bonds is far."""
    models = {
        "same": ModelSpec("same", factory=XTB, kwargs=GFN2),
        "stretched": ModelSpec(
            "stretched", factory="tests.md_validation.test_reference:Stretched"
        ),
    }
    protocol = Protocol(
        temperatures=[300.0], n_steps=300, replicas=2, run=RunSettings(stride=3)
    )
    reference = ModelSpec("gfn2", factory=XTB, kwargs=GFN2)
    _, lines = validate_models(
        models, start_atoms, tmp_path, protocol, reference=reference,
        reference_energy=float(xtb_dataset.energies.min()), jobs=2,
    )  # fmt: skip
    comparison = json.loads((tmp_path / "comparison.json").read_text())
    table = comparison["temperatures"]["300"]["reference"]
    self_js = table["reference"]["self_js_divergence"]
    same, wrong = (table["models"][m] for m in ("same", "stretched"))
    assert wrong["js_divergence"] > 5 * max(self_js, same["js_divergence"])
    assert same["js_divergence"] < 3 * self_js
    assert table["reference"]["replicas"] == 2 and same["frames"] > 150
    # two replicas a side: no interval pretends to mean something
    difference = same["potential_energy_eV_minus_reference"]
    assert difference["ci95"] == [None, None] and abs(difference["mean"]) < 0.2
    assert difference["ci_note"] == "too few replicas for an interval (2 < 3)"
    assert table["reference"]["temperature_K"]["ci95"] == [None, None]
    assert "too few replicas for an interval (2 < 3)" in lines[-1]
    assert any("stretched vs reference MD: JS divergence" in line for line in lines)
    assert (tmp_path / "reference.png").stat().st_size > 1000


def run_cli(capsys, *argv):
    return run_cli_with(capsys, *argv, entry=main)


@pytest.fixture(scope="module")
def start_file(tmp_path_factory, xtb_dataset):
    path = tmp_path_factory.mktemp("md_reference") / "ethanol.extxyz"
    xtb_dataset.write(path)
    return path


@pytest.mark.parametrize(
    ("extra", "needles"),
    [
        (["--reference", "tblite.ase:NoSuch"], ["cannot import", "NoSuch"]),
        (["--reference", "nosuchmodule:X"], ["cannot import", "nosuchmodule"]),
        (["--reference", "TBLite"], ["MODULE:CALLABLE"]),
        (["--reference", XTB, "--reference-kwargs", "{method"], ["not JSON"]),
        (["--reference-kwargs", "{}"], ["needs --reference"]),
        (
            ["--reference", XTB, "--reference-kwargs", '{"method": "GFN9"}'],
            ["fails on the start frame", "GFN9"],
        ),
        (["--replicas", "0"], ["must be positive"]),
    ],
)
def test_bad_reference_is_one_line(
    tmp_path, capsys, sgdml_model, start_file, extra, needles
):
    args = ["--model", f"m={sgdml_model}", "--start", start_file, "--steps", "5"]
    status, _, err = run_cli(capsys, *args, *extra, "-o", tmp_path / "x")
    assert_one_line_error(status, err, *needles)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_cli_with_reference(tmp_path, capsys, sgdml_model, start_file):
    out = tmp_path / "md"
    status, stdout, err = run_cli(
        capsys, "--model", f"m={sgdml_model}", "--start", start_file,
        "--temperatures", "300", "--steps", "200", "--replicas", "2",
        "--reference", XTB, "--reference-kwargs", json.dumps(GFN2),
        "--reference-replicas", "1", "--reference-time-ps", "0.05",
        "--stride", "5", "-o", out,
    )  # fmt: skip
    assert status == 0, err
    survival = (out / "survival.csv").read_text().splitlines()
    assert "reference,300,0,0.05,0" in survival and len(survival) == 4
    run = json.loads((out / "reference/300K/replica0/run.json").read_text())
    assert run["steps_done"] == 100 and run["seed"] == 1_000_000
    entry = json.loads((out / "comparison.json").read_text())["temperatures"]["300"]
    assert entry["reference"]["reference"]["replicas"] == 1
    assert 0 < entry["reference"]["models"]["m"]["js_divergence"] < 1
    assert "300 K: m vs reference MD: JS divergence of distances" in stdout
    assert (out / "reference.png").exists()
