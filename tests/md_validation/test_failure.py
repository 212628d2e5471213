import numpy as np
import pytest

from md_validation.failure import (
    FailureCriteria,
    TemperatureWatch,
    check_frame,
    check_structure,
)


def test_reference_trajectory_never_fails(xtb_dataset):
    """The rule must not fire on the reference method's own 500 K MD."""
    for i in range(len(xtb_dataset)):
        reason = check_frame(
            xtb_dataset.numbers,
            xtb_dataset.positions[i],
            xtb_dataset.energies[i],
            xtb_dataset.forces[i],
        )
        assert reason is None, (i, reason)


def test_structural_failures(xtb_dataset):
    numbers, positions = xtb_dataset.numbers, xtb_dataset.positions[0].copy()
    heavy = np.flatnonzero(numbers > 1)
    hydrogen = np.flatnonzero(numbers == 1)[0]

    torn = positions.copy()
    torn[heavy[-1]] += [0.0, 0.0, 6.0]  # a heavy atom leaves the skeleton
    assert "skeleton split into 2" in check_structure(numbers, torn)

    lost = positions.copy()
    lost[hydrogen] += [0.0, 0.0, 4.0]
    assert f"hydrogen {hydrogen}" in check_structure(numbers, lost)

    collapsed = positions.copy()
    collapsed[1] = collapsed[0] + [0.3, 0.0, 0.0]
    assert "collapsed" in check_structure(numbers, collapsed)

    assert "non-finite energy" in check_frame(numbers, positions, np.nan, None)
    bad = np.zeros_like(positions)
    bad[0, 0] = np.inf
    assert check_frame(numbers, positions, 0.0, bad) == "non-finite forces"


def test_thresholds_are_parameters(xtb_dataset):
    numbers, positions = xtb_dataset.numbers, xtb_dataset.positions[0]
    strict = FailureCriteria(max_hydrogen_distance=0.5)
    assert "hydrogen" in check_structure(numbers, positions, strict)


def test_temperature_runaway_needs_a_whole_window():
    watch = TemperatureWatch(300.0, 0.5, FailureCriteria(temperature_window_fs=5.0))
    assert watch.window == 10
    series = [300.0] * 5 + [1000.0] * 9 + [300.0] + [1000.0] * 10
    index, reason = watch.first_failure(series)
    assert index == 24
    assert "900 K" in reason
    assert TemperatureWatch(300.0, 0.5).first_failure([850.0] * 1000) is None


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_temperature_non_finite(value):
    assert "non-finite" in TemperatureWatch(300, 0.5).update(value)


def test_component_count_is_scipys():
    """The skeleton's parts, counted as scipy's connected_components counts them."""
    from scipy.sparse.csgraph import connected_components

    from md_validation.failure import _count_components

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 12, 40):
        for density in (0.0, 0.05, 0.2, 0.6):
            upper = np.triu(rng.random((n, n)) < density, 1)
            bonded = upper | upper.T
            assert _count_components(bonded) == connected_components(bonded)[0]
    chain = np.eye(30, k=1, dtype=bool)  # the longest path: 29 rounds
    assert _count_components(chain | chain.T) == 1


def test_monitored_flattened_calculator_gives_the_calculators_numbers(
    sgdml_model, xtb_dataset
):
    """FlattenedCalculator is called directly (one calculate per step); energies
    and forces are those of get_potential_energy / get_forces, to the bit."""
    from ase.calculators.calculator import Calculator

    from ase_flatten import FlattenedCalculator
    from md_validation.failure import MDFailure, MonitoredCalculator

    class Plain(Calculator):  # the same model behind the generic path
        implemented_properties = ["energy", "forces"]

        def __init__(self):
            super().__init__()
            self.inner = FlattenedCalculator(sgdml_model)

        def calculate(self, atoms=None, properties=("energy",), changes=None):
            super().calculate(atoms, properties, changes)
            frame = atoms.copy()
            frame.calc = self.inner
            energy = frame.get_potential_energy()
            self.results = {"energy": energy, "forces": frame.get_forces()}

    direct = MonitoredCalculator(FlattenedCalculator(sgdml_model))
    generic = MonitoredCalculator(Plain())
    assert direct._direct and not generic._direct
    for i in (0, 5, 9):
        atoms = xtb_dataset.to_atoms(i)
        energies, forces = [], []
        for calc in (direct, generic):
            atoms.calc = calc
            energies.append(atoms.get_potential_energy())
            forces.append(atoms.get_forces())
        assert energies[0] == energies[1]
        np.testing.assert_array_equal(forces[0], forces[1])
    assert direct.n_calls == generic.n_calls == 3
    strict = FailureCriteria(max_hydrogen_distance=0.5)  # fires on any frame
    atoms = xtb_dataset.to_atoms(0)
    atoms.calc = MonitoredCalculator(FlattenedCalculator(sgdml_model), strict)
    with pytest.raises(MDFailure, match="hydrogen"):
        atoms.get_forces()
