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
    # mass: squared error 9*10=90 of 90+14.4+10+2.5 = 116.9 -> cluster 1 alone
    chosen, limit = picking.high_error_union(rmse, 1.0, 1.1, "mass", candidates, 1)
    assert chosen.tolist() == [1] and limit == 3.0
    # a flat error spreads the union: half the mass needs two of four equal clusters
    flat = np.ones(4)
    chosen, limit = picking.high_error_union(flat, 1.0, 1.1, "mass", np.ones(4), 1)
    assert chosen.tolist() == [0, 1] and limit == 1.0
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


def test_spread_frames_is_farthest_point_sampling():
    X = np.array([[0.0], [1.0], [2.0], [10.0], [9.0], [5.0]])
    # chosen: frame 0; candidates 1..5; farthest first, then away from it too
    picks = picking.spread_frames(X, np.arange(1, 6), [np.array([0])], 3)
    assert picks.tolist() == [3, 5, 2]
    assert picking.spread_frames(X, np.arange(1, 6), [np.array([0])], 0).size == 0


def test_farthest_high_error_spreads_over_the_frames_above_the_threshold():
    X = np.array([[0.0], [1.0], [1.1], [1.2], [8.0], [4.0]])
    union = np.array([1, 2, 3, 4, 5])
    rmse = np.array([0.9, 1.0, 0.95, 0.3, 0.8])  # frame 4 is far but low-error
    picks = picking.farthest_high_error(X, union, rmse, 0.5, np.array([0]), 2)
    # above 0.5: frames 1, 2, 3, 5; farthest from 0 is 5, then 1.2 (frame 3)
    assert picks.tolist() == [5, 3]
    # fewer above the threshold than wanted: the highest errors are used
    picks = picking.farthest_high_error(X, union, rmse, 0.97, np.array([0]), 2)
    assert sorted(picks.tolist()) == [2, 3]


def test_ranked_with_diversity_damps_frames_near_a_pick():
    X = np.array([[0.0], [5.0], [5.01], [3.0]])
    candidates = np.array([1, 2, 3])
    rmse = np.array([1.0, 0.99, 0.7])
    # the two highest errors are one geometry: the second pick goes elsewhere
    picks = picking.ranked_with_diversity(X, candidates, rmse, np.array([0]), 2)
    assert picks.tolist() == [1, 3]
    # a plain error ranking would have taken 1 then 2
    assert np.argsort(-rmse)[:2].tolist() == [0, 1]
    assert picking.ranked_with_diversity(X, candidates, rmse, [0], 0).size == 0


def test_weighted_overall_rmse_weighs_each_cluster_by_its_frames():
    # 90 frames at 0.1 eV/Å and 10 at 0.5: the pool's RMSE, not the clusters' mean
    rmse = np.array([0.1, 0.5, np.nan])
    frames = np.array([90, 10, 5])
    expected = np.sqrt((90 * 0.01 + 10 * 0.25) / 100)
    assert picking.weighted_overall_rmse(rmse, frames) == pytest.approx(expected)
    assert picking.weighted_overall_rmse(rmse, np.array([1, 1, 0])) == pytest.approx(
        np.sqrt((0.01 + 0.25) / 2)
    )
