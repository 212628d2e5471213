"""Peer strategies for choosing N training frames from a pool.

``random``
    uniform without replacement (the paper's "default model");
``energy``
    energy-stratified sampling as sGDML does by default (its
    ``draw_strat_sample``: a Freedman-Diaconis histogram of the energies, frames
    spread over the bins);
``fps``, ``cur``
    farthest-point sampling and CUR decomposition in the pairwise-distance
    descriptor space, scikit-matter's implementations;
``direct``
    DIRECT sampling (maml's ``DIRECTSampler``: standard scaling, PCA with the
    Kaiser rule and weighted components, BIRCH into ``n`` clusters, the frame
    nearest each cluster's centre) on the pairwise-distance descriptor;
``ggfps``
    gradient-guided farthest-point sampling (Trestman, Gugler, Faber and von
    Lilienfeld, 2025): farthest-point sampling on the pairwise-distance
    descriptor where each candidate's distance to the chosen frames is weighted
    by its force norm (:func:`gradient_guided_fps`);
``quests``
    QUESTS' minimum set cover (MSC) compression of the atomic environments
    (Schwalbe-Koda et al., 2025), run by the ``quests`` library with k and the
    bandwidth set for single molecules (:mod:`ase_flatten.quests`);
``committee``
    query by committee: train a committee of models on the frames chosen so far,
    add the frames where their forces disagree most, with diversity among the
    picks (:mod:`ase_flatten.selection.committee`); needs a backend.
``lcmd``
    batch active learning on last-layer features: a model trained on the frames
    chosen so far, and bmdal-reg's LCMD selection in its last-layer feature
    space (:mod:`ase_flatten.selection.lcmd`); needs a neural backend
    (``schnet``) and the extra ``lcmd``.

:class:`PeerSettings` holds the settings of the last three, checked before any
work starts.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import InputError, option

if TYPE_CHECKING:  # the CLI imports STRATEGIES while it builds its parser
    from ..backends.base import Backend
    from ..data import Dataset

STRATEGIES = (
    "random",
    "energy",
    "fps",
    "cur",
    "direct",
    "ggfps",
    "quests",
    "committee",
    "lcmd",
)
#: strategies that train models while they choose (need ``make_backend``)
MODEL_STRATEGIES = ("committee", "lcmd")
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PeerSettings:
    """Settings of the ``ggfps``, ``quests`` and ``committee`` strategies.

    Parameters
    ----------
    committee : int
        Models in the committee (at least 2: one model has no disagreement).
    committee_steps : int
        Rounds of the committee loop after the random start (also ``lcmd``'s).
    committee_init : float
        Share of the ``n`` frames drawn at random before the first round
        (default 0.5: the suite's flattening loop starts from 50 of 100 frames);
        also the ``lcmd`` strategy's random start.
    committee_subsample : float
        Share of the chosen frames each member trains on (drawn without
        replacement, seeded per member). Sub-sampling rather than a bootstrap with
        repeats: a kernel model (sGDML, GAP) has a singular kernel matrix on a
        repeated frame, and trained on the same frames with a fixed width it is
        the same model whatever its seed.
    committee_candidates : int
        The picks of a round are made by farthest-point sampling among this many
        times as many frames of the highest disagreement.
    bandwidth : float or None
        QUESTS' kernel bandwidth in 1/Å; None: set from the pool for single
        molecules (:func:`ase_flatten.quests.molecule_bandwidth`).
    ggfps_beta : float
        Exponent of the force norm in GGFPS' weighted distance (0: plain FPS).
    """

    committee: int = 4
    committee_steps: int = 2
    committee_init: float = 0.5
    committee_subsample: float = 0.8
    committee_candidates: int = 3
    bandwidth: float | None = None
    ggfps_beta: float = 1.0

    def __post_init__(self):
        if self.committee < 2:
            raise InputError(
                f"a committee of {self.committee} model has no disagreement to pick "
                "by: query by committee needs --committee 2 or more"
            )
        if self.committee_steps < 1:
            raise InputError(
                f"--committee-steps must be at least 1, got {self.committee_steps}"
            )
        if not 0 < self.committee_init < 1:
            raise InputError(
                "the committee's random start must be a share between 0 and 1, "
                f"got {self.committee_init}"
            )
        if not 0 < self.committee_subsample <= 1:
            raise InputError(
                "the committee members' share of the chosen frames must be in "
                f"(0, 1], got {self.committee_subsample}"
            )
        if self.committee_candidates < 1:
            raise InputError(
                "committee_candidates must be at least 1, got "
                f"{self.committee_candidates}"
            )
        if self.bandwidth is not None and not self.bandwidth > 0:
            given = option("bandwidth", self.bandwidth, flag="--quests-bandwidth")
            raise InputError(f"the QUESTS bandwidth must be positive, got {given}")
        if not self.ggfps_beta >= 0:
            raise InputError(f"the GGFPS exponent must be >= 0, got {self.ggfps_beta}")


def select_frames(
    strategy: str,
    dataset: Dataset,
    pool: np.ndarray,
    n: int,
    seed: int = 0,
    *,
    settings: PeerSettings | None = None,
    make_backend: Callable[[int], Backend] | None = None,
) -> np.ndarray:
    """Choose ``n`` frames of ``pool`` with ``strategy``; sorted dataset indices.

    Parameters
    ----------
    strategy : str
        One of :data:`STRATEGIES`.
    dataset : Dataset
    pool : array of int
        The frames to choose from; every other frame of ``dataset`` is treated as
        held out (the test split): no model trained here sees it.
    n : int
        Frames wanted.
    seed : int
        Seeds every random choice.
    settings : PeerSettings, optional
        Settings of ``ggfps``, ``quests`` and ``committee`` (defaults otherwise).
    make_backend : callable, optional
        ``make_backend(seed)`` returns a new, unfitted backend; needed by the
        strategies of :data:`MODEL_STRATEGIES`.
    """
    settings = settings or PeerSettings()
    if strategy in MODEL_STRATEGIES and make_backend is None:
        raise InputError(f"the {strategy} strategy needs a backend to train")
    pool = np.asarray(pool, dtype=int)
    if n > len(pool):
        raise InputError(
            f"{dataset.source}: cannot choose {n} training frames from a pool of "
            f"{len(pool)} (the rest is the test split)"
        )
    if strategy == "random":
        chosen = np.random.default_rng(seed).choice(pool, n, replace=False)
    elif strategy == "energy":
        from ..backends.sgdml import energy_stratified_sample

        chosen = pool[energy_stratified_sample(dataset.energies[pool], n, seed)]
    elif strategy in ("fps", "cur"):
        chosen = pool[_skmatter(strategy, dataset.positions[pool], n, seed)]
    elif strategy == "direct":
        chosen = pool[_direct(dataset.positions[pool], n, seed)]
    elif strategy == "ggfps":
        from ..descriptors import pairwise_distances

        X = pairwise_distances(dataset.positions[pool])
        chosen = pool[
            gradient_guided_fps(X, dataset.forces[pool], n, seed, settings.ggfps_beta)
        ]
    elif strategy == "quests":
        from ..quests import msc_select

        chosen = pool[
            msc_select(
                dataset.numbers,
                dataset.positions[pool],
                n,
                bandwidth=settings.bandwidth,
                seed=seed,
                source=dataset.source,
            )
        ]
    elif strategy == "committee":
        from .committee import committee_select

        chosen = committee_select(dataset, pool, n, make_backend, seed, settings)
    elif strategy == "lcmd":
        from .lcmd import lcmd_select_frames

        chosen = lcmd_select_frames(dataset, pool, n, make_backend, seed, settings)
    else:
        raise InputError(
            f"unknown strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    return np.sort(chosen)


def farthest_point_frames(positions: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Farthest-point sampling of frames on the pairwise-distance descriptor.

    The ``fps`` strategy (scikit-matter's FPS) for frames that are not a Dataset
    (e.g. MD frames without reference labels).

    Parameters
    ----------
    positions : ndarray, shape (M, N, 3)
        Frames in Å.
    n : int
        Frames wanted; all ``M`` (in order) when ``n >= M``.
    seed : int
        Chooses the first frame.

    Returns
    -------
    ndarray, shape (min(n, M),)
        Frame indices in the order FPS chose them (most spread first).
    """
    if n >= len(positions):
        return np.arange(len(positions))
    return _skmatter("fps", np.asarray(positions), n, seed)


def gradient_guided_fps(
    X: np.ndarray, forces: np.ndarray, n: int, seed: int = 0, beta: float = 1.0
) -> np.ndarray:
    """Gradient-guided farthest-point sampling (GGFPS).

    After Trestman, Gugler, Faber and von Lilienfeld (2025): with ``g_j`` the norm
    of frame ``j``'s forces (all atoms, eV/Å) and ``d_j`` its descriptor distance
    to the nearest frame chosen so far, the next frame maximises
    ``s_j = g_j**beta * d_j``; the first frame is drawn with probability
    ``g_j / sum(g)``. The paper varies the exponent over the picks by a schedule
    ``beta_k`` whose values are not reproduced here: this variant keeps one
    exponent (``beta=1`` by default; ``beta=0`` is plain FPS from a force-drawn
    start). Distances are Euclidean on the descriptor ``X`` (pairwise atomic
    distances for the ``ggfps`` strategy, where the paper used FCHL19).

    Parameters
    ----------
    X : ndarray, shape (M, D)
        Descriptor of each frame.
    forces : ndarray, shape (M, N, 3)
        Reference forces in eV/Å.
    n : int
        Frames wanted (``n <= M``).
    seed : int
        Draws the first frame.
    beta : float
        Exponent of the force norm (>= 0).

    Returns
    -------
    ndarray, shape (n,)
        Distinct indices into ``X`` in the order chosen.
    """
    X = np.asarray(X, dtype=float)
    g = np.linalg.norm(np.asarray(forces, dtype=float).reshape(len(X), -1), axis=1)
    rng = np.random.default_rng(seed)
    p = g / g.sum() if g.sum() > 0 else None
    first = int(rng.choice(len(X), p=p))
    weight = g**beta
    nearest = np.linalg.norm(X - X[first], axis=1)
    chosen = [first]
    taken = np.zeros(len(X), dtype=bool)
    taken[first] = True
    for _ in range(1, n):
        score = np.where(taken, -np.inf, weight * nearest)
        j = int(np.argmax(score))
        chosen.append(j)
        taken[j] = True
        nearest = np.minimum(nearest, np.linalg.norm(X - X[j], axis=1))
    return np.asarray(chosen, dtype=int)


def _skmatter(strategy: str, positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    try:
        from skmatter.sample_selection import CUR, FPS
    except ImportError as exc:
        raise InputError(
            f"the {strategy} strategy needs skmatter: pip install "
            "'ase-flatten[baselines]'"
        ) from exc
    from ..descriptors import pairwise_distances

    X = pairwise_distances(positions)
    if strategy == "fps":
        first = int(np.random.default_rng(seed).integers(len(X)))
        selector = FPS(n_to_select=n, initialize=first)
    else:
        # The descriptor has rank N(N-1)/2 (36 for ethanol): CUR on it runs out of
        # directions after that many picks. CUR therefore runs on an RBF feature
        # map of the descriptor (Nystroem, width from the descriptor's variance)
        # with enough components, and recomputes its leverage scores every
        # n/10 picks instead of after each (0.9-1.9 s per recomputation at 1,000
        # components on 18,000 frames).
        from sklearn.kernel_approximation import Nystroem

        components = min(len(X), max(2 * n, 200))
        gamma = 1.0 / (2.0 * X.var(axis=0).sum())
        feature_map = Nystroem(gamma=gamma, n_components=components, random_state=seed)
        X = feature_map.fit_transform(X)
        selector = CUR(n_to_select=n, recompute_every=max(1, n // 10))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # skmatter's zero-column notes
        return np.asarray(selector.fit(X).selected_idx_, dtype=int)


def _direct(positions: np.ndarray, n: int, seed: int) -> np.ndarray:
    """DIRECT sampling, run by maml itself, on the pairwise-distance descriptor.

    maml's pipeline without its structure encoder: scaling, PCA (components with
    eigenvalue > 1, weighted by their explained variance), BIRCH into ``n``
    clusters (maml lowers BIRCH's threshold until it finds ``n`` subclusters), one
    frame per cluster (the one nearest its centre). DIRECT itself has no random
    choice; BIRCH depends on the order it reads the frames in, so ``seed``
    shuffles that order. A cluster that no frame is predicted into leaves a gap,
    filled with frames drawn at random (seeded) from the rest.

    Parameters
    ----------
    positions : ndarray, shape (M, N, 3)
        Pool frames in Å.
    n : int
        Frames wanted (``n <= M``).
    seed : int
        Shuffles the frames BIRCH reads and draws any top-up frames.

    Returns
    -------
    ndarray, shape (n,)
        Distinct indices into ``positions``.
    """
    DIRECTSampler, BirchClustering, SelectKFromClusters = _import_maml()
    from sklearn.exceptions import ConvergenceWarning

    from ..descriptors import pairwise_distances

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(positions))
    X = pairwise_distances(positions[order])
    sampler = DIRECTSampler(
        structure_encoder=False,
        clustering=BirchClustering(n=n, threshold_init=0.5),
        select_k_from_clusters=SelectKFromClusters(k=1),
    )
    with warnings.catch_warnings():
        # BIRCH warns at each threshold maml's loop tries and lowers
        warnings.simplefilter("ignore", ConvergenceWarning)
        result = sampler.fit_transform(X)
    picked = np.unique(np.asarray(result["selected_indexes"], dtype=int))
    if len(picked) < n:
        logger.info(
            "DIRECT gave %d frames for %d clusters; %d drawn at random",
            len(picked),
            n,
            n - len(picked),
        )
        rest = np.setdiff1d(np.arange(len(X)), picked)
        picked = np.concatenate([picked, rng.choice(rest, n - len(picked), False)])
    return order[picked[:n]]


def _import_maml():
    """maml's DIRECT classes, without the side effects of importing maml.

    maml's modules call ``logging.basicConfig()`` and set their own loggers to
    INFO: the root logger's handlers are restored and maml's sampling loggers
    follow this module's level.
    """
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        from maml.sampling.direct import (
            BirchClustering,
            DIRECTSampler,
            SelectKFromClusters,
        )
    except ImportError as exc:
        raise InputError(
            "the direct strategy needs maml: pip install 'ase-flatten[direct]'"
        ) from exc
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    for name in ("pca", "clustering", "stratified_sampling"):
        logging.getLogger(f"maml.sampling.{name}").setLevel(
            max(logger.getEffectiveLevel(), logging.INFO)
        )
    return DIRECTSampler, BirchClustering, SelectKFromClusters
