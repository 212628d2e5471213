"""Peer strategies: DIRECT sampling through maml on real GFN2-xTB frames."""

import importlib.util
import sys

import numpy as np
import pytest

from ase_flatten.exceptions import InputError
from ase_flatten.selection import split
from ase_flatten.selection.baselines import select_frames

needs_maml = pytest.mark.skipif(
    importlib.util.find_spec("maml") is None,
    reason="the direct strategy needs maml (the extra 'direct')",
)


def test_direct_without_maml_names_the_extra(xtb_dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "maml.sampling.direct", None)  # import fails
    with pytest.raises(InputError, match=r"pip install 'ase-flatten\[direct\]'"):
        select_frames("direct", xtb_dataset, np.arange(100), 20)


@pytest.mark.slow
@needs_maml
def test_direct_picks_distinct_pool_frames_deterministically(xtb_dataset):
    test, pool = split.holdout_split(len(xtb_dataset), 0.1, 0)
    first = select_frames("direct", xtb_dataset, pool, 20, seed=0)
    again = select_frames("direct", xtb_dataset, pool, 20, seed=0)
    other = select_frames("direct", xtb_dataset, pool, 20, seed=1)
    np.testing.assert_array_equal(first, again)
    for chosen in (first, other):
        assert len(chosen) == 20 and len(np.unique(chosen)) == 20
        assert np.isin(chosen, pool).all() and not np.isin(chosen, test).any()
    assert not np.array_equal(first, other)  # the seed orders BIRCH's input


@needs_maml
def test_direct_spreads_over_the_descriptor_space(xtb_dataset):
    """One frame per BIRCH cluster: the picks lie farther apart than random ones."""
    from scipy.spatial.distance import pdist

    from ase_flatten.descriptors import pairwise_distances

    _, pool = split.holdout_split(len(xtb_dataset), 0.1, 0)
    X = pairwise_distances(xtb_dataset.positions)
    direct = select_frames("direct", xtb_dataset, pool, 20, seed=0)
    nearest = []
    for seed in range(5):
        random = select_frames("random", xtb_dataset, pool, 20, seed=seed)
        d = pdist(X[random])
        nearest.append(d.min())
    assert pdist(X[direct]).min() > np.median(nearest)
