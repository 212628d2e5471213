"""The clustering options, their allowed values and defaults: defined once here.

Light to import (no scikit-learn): the command line builds its choices and
defaults from it, :class:`~ase_flatten.clustering.TwoStageClustering` and
:class:`~ase_flatten.selection.flatten.SelectionConfig` take their defaults from
it. The descriptors and reductions are defined with their code in
:mod:`ase_flatten.descriptors`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .descriptors import DESCRIPTORS, REDUCTIONS

__all__ = [
    "ASSIGN",
    "ASSIGN_RULES",
    "ClusteringSettings",
    "DESCRIPTOR",
    "DESCRIPTORS",
    "DOMAIN_KINDS",
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


@dataclass(frozen=True)
class ClusteringSettings:
    """The two-stage clustering of a workflow (the paper's defaults).

    The settings of :class:`~ase_flatten.clustering.TwoStageClustering` that the
    workflows (:func:`~ase_flatten.training.train_model`,
    :func:`~ase_flatten.reports.error_report`) and the command lines share; its
    seed is the workflow's.

    Parameters
    ----------
    n_geometry : int
        Ward clusters on the descriptor.
    n_energy : int
        KMeans energy levels in each geometry cluster.
    subset_size : int
        Ward runs on at most this many frames; the rest are assigned.
    assign : {"average", "max"}
        How a frame outside the Ward subset joins a cluster.
    descriptor : {"distances", "inverse"}
        Pairwise distances (the paper) or inverse distances.
    reduce : {"pca", "kpca"} or None
        Reduce the descriptor before clustering (larger molecules).
    n_components : int
        Components kept by ``reduce``.
    """

    n_geometry: int = N_GEOMETRY
    n_energy: int = N_ENERGY
    subset_size: int = SUBSET_SIZE
    assign: str = ASSIGN
    descriptor: str = DESCRIPTOR
    reduce: str | None = None
    n_components: int = N_COMPONENTS

    def fit(self, dataset, seed: int = 0):
        """The fitted :class:`~ase_flatten.clustering.TwoStageClustering` of
        ``dataset`` (``labels_``: one cluster per frame)."""
        from .clustering import cluster_dataset

        # the fields are TwoStageClustering's parameters, by name
        return cluster_dataset(dataset, random_state=seed, **vars(self))

    def record(self, dataset, seed: int = 0) -> dict:
        """What a clusters file records besides the model
        (:func:`~ase_flatten.clustering.save_clusters`' metadata)."""
        return {
            "fingerprint": dataset.fingerprint(),
            "numbers": dataset.numbers,
            "source": dataset.source,
            "descriptor": self.descriptor,
            "seed": seed,
        }


#: The applicability domains a model can be saved with (``--domain``,
#: :mod:`ase_flatten.domain`): descriptor distance or QUESTS dH.
DOMAIN_KINDS = ("distance", "quests")
