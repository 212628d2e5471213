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
