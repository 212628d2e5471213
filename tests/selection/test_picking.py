import numpy as np
import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.selection import picking


def test_cluster_rmse():
    labels = np.array([0, 0, 2])
    mse = np.array([1.0, 3.0, 4.0])
    rmse = picking.cluster_rmse(labels, mse, 3)
    assert rmse[0] == pytest.approx(np.sqrt(2.0)) and rmse[2] == 2.0
    assert np.isnan(rmse[1])


def test_high_error_union_threshold_variants():
    rmse = np.array([1.0, 3.0, 1.2, np.nan, 0.5])
    candidates = np.array([10, 10, 10, 0, 10])
    chosen, limit = picking.high_error_union(rmse, 1.0, 1.1, "overall", candidates, 1)
    assert limit == pytest.approx(1.1) and chosen.tolist() == [1, 2]
    chosen, limit = picking.high_error_union(rmse, 1.0, 1.1, "mean", candidates, 1)
    assert limit == pytest.approx(1.1 * np.nanmean(rmse)) and chosen.tolist() == [1]
    # too few frames above the threshold: the next-worst clusters join
    chosen, _ = picking.high_error_union(rmse, 1.0, 1.1, "mean", candidates, 25)
    assert chosen.tolist() == [1, 2, 0]
    with pytest.raises(InputError, match="unknown threshold"):
        picking.high_error_union(rmse, 1.0, 1.1, "median", candidates, 1)


def test_allocate_worst_takes_one_from_each_of_the_worst():
    sizes = np.array([5, 5, 5, 5])
    rmse = np.array([1.0, 4.0, 3.0, 2.0])
    counts = picking.allocate("worst", 2, sizes, rmse, sizes * rmse**2)
    assert counts.tolist() == [0, 1, 1, 0]
    # more frames than clusters: round after round, capped by cluster size
    counts = picking.allocate("worst", 6, np.array([1, 1, 5, 1]), rmse, rmse)
    assert counts.tolist() == [1, 1, 3, 1]


def test_allocate_proportional_variants():
    sizes = np.array([60, 30, 10])
    rmse = np.array([1.0, 2.0, 3.0])
    squared = np.array([10.0, 10.0, 80.0])
    assert picking.allocate("size", 10, sizes, rmse, squared).tolist() == [6, 3, 1]
    assert picking.allocate("error", 10, sizes, rmse, squared).tolist() == [1, 1, 8]
    counts = picking.allocate("error", 10, np.array([60, 30, 2]), rmse, squared)
    assert counts.sum() == 10 and counts[2] == 2  # capped, the rest goes elsewhere
    with pytest.raises(InputError, match="unknown allocation"):
        picking.allocate("uniform", 10, sizes, rmse, squared)


def test_pick_in_cluster_criteria():
    members = np.array([10, 11, 12, 13])
    error = np.array([0.1, 0.9, 0.5, 0.2])
    X = np.array([[0.0], [5.0], [1.0], [2.0]])  # centre 2.0
    rng = np.random.default_rng(0)
    assert picking.pick_in_cluster("error", members, 2, error, X, rng).tolist() == [
        11,
        12,
    ]
    assert picking.pick_in_cluster("centroid", members, 1, error, X, rng).tolist() == [
        13
    ]
    picked = picking.pick_in_cluster("random", members, 3, error, X, rng)
    assert len(set(picked)) == 3 and set(picked) <= set(members)
    with pytest.raises(InputError, match="unknown criterion"):
        picking.pick_in_cluster("best", members, 1, error, X, rng)
