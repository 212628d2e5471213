"""The committee error estimate's calibration and deviation."""

import numpy as np
import pytest

from ase_flatten.selection.estimate import calibrated, committee_deviation


def test_calibration_recovers_a_power_law():
    rng = np.random.default_rng(0)
    deviation = rng.uniform(1e-4, 1e-2, 200)
    mse = 3.0 * deviation**0.8
    measured = np.zeros(200, bool)
    measured[:20] = True
    estimate = calibrated(deviation, measured, np.where(measured, mse, np.nan))
    np.testing.assert_allclose(estimate, mse, rtol=1e-10)


def test_a_backwards_committee_ranks_nothing():
    deviation = np.array([1.0, 2.0, 4.0, 8.0, 3.0])
    mse = np.array([8.0, 4.0, 2.0, 1.0, np.nan])
    measured = np.isfinite(mse)
    estimate = calibrated(deviation, measured, mse)
    np.testing.assert_allclose(estimate, np.exp(np.mean(np.log(mse[:4]))))


def test_too_few_measured_frames_scale_the_deviation():
    deviation = np.array([1.0, 2.0, 4.0])
    mse = np.array([3.0, np.nan, np.nan])
    estimate = calibrated(deviation, np.isfinite(mse), mse)
    np.testing.assert_allclose(estimate, [3.0, 6.0, 12.0])


class _Mean:
    """A backend predicting its training frames' mean force everywhere."""

    def __init__(self, seed):
        self.seed = seed

    def fit(self, dataset, train, held_out=None):
        assert not np.isin(train, held_out).any()
        self.mean_ = dataset.forces[train].mean(axis=0)
        return self

    def predict(self, dataset, frames, progress=None):
        return np.zeros(len(frames)), np.repeat(self.mean_[None], len(frames), 0)


def test_committee_deviation_is_the_members_force_variance(xtb_dataset):
    train = np.arange(20)
    frames = np.arange(100, 110)
    rng = np.random.default_rng(3)
    deviation = committee_deviation(
        xtb_dataset, train, frames, _Mean, 3, 0.5, rng, held_out=np.arange(20, 30)
    )
    # recompute the members' means with the same draws
    rng = np.random.default_rng(3)
    means = []
    for _ in range(3):
        subset = np.sort(rng.choice(train, 10, replace=False))
        rng.integers(2**31)
        means.append(xtb_dataset.forces[subset].mean(axis=0))
    expected = np.stack(means).var(axis=0).mean()
    assert deviation.shape == (10,)
    np.testing.assert_allclose(deviation, expected, rtol=1e-12)
    assert expected > 0


@pytest.mark.parametrize("share", [0.01, 1.0])
def test_members_train_on_at_least_two_frames(xtb_dataset, share):
    seen = []

    class Recording(_Mean):
        def fit(self, dataset, train, held_out=None):
            seen.append(len(train))
            return super().fit(dataset, train, held_out)

    committee_deviation(
        xtb_dataset, np.arange(10), np.arange(20, 22), Recording, 2, share,
        np.random.default_rng(0), held_out=np.arange(30, 40),
    )  # fmt: skip
    assert seen == [2, 2] if share < 0.1 else seen == [10, 10]
