"""The clustering options, their allowed values and defaults: defined once here.

Light to import (no scikit-learn): the command line builds its choices and
defaults from it, :class:`~ase_flatten.clustering.TwoStageClustering` and
:class:`~ase_flatten.selection.flatten.SelectionConfig` take their defaults from
it. The descriptors and reductions are defined with their code in
:mod:`ase_flatten.descriptors`.
"""

from __future__ import annotations

from .descriptors import DESCRIPTORS, REDUCTIONS

__all__ = [
    "ASSIGN",
    "ASSIGN_RULES",
    "DESCRIPTOR",
    "DESCRIPTORS",
    "N_COMPONENTS",
    "N_ENERGY",
    "N_GEOMETRY",
    "REDUCTIONS",
    "SUBSET_SIZE",
]

#: Ward clusters on the descriptor (the paper: 10).
N_GEOMETRY = 10
#: KMeans energy levels in each geometry cluster (the paper: 5).
N_ENERGY = 5
#: Ward runs on at most this many frames; the rest are assigned.
SUBSET_SIZE = 5000
#: How a frame outside the Ward subset joins a cluster: smallest average
#: distance to its members (the paper) or smallest maximum (the authors' code).
ASSIGN_RULES = ("average", "max")
ASSIGN = "average"
#: Pairwise distances (the paper).
DESCRIPTOR = "distances"
#: Components kept by a descriptor reduction (``reduce``).
N_COMPONENTS = 10
