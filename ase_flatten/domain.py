"""The applicability domain: is a structure near the data a model was measured on?

A structure lies inside the domain when its nearest reference frame, in the
pairwise-distance descriptor (Å), is closer than a threshold calibrated on the data
itself. Two things make that threshold hold in molecular dynamics:

Time-separated calibration
    The threshold is the ``percentile`` of each reference frame's distance to its
    nearest reference frame *more than* ``exclude_frames`` frames away in the
    trajectory (frames are in trajectory order). Without the exclusion a frame's
    nearest neighbour is the next MD frame (2.5 fs later in the shared data), and
    the threshold measures time correlation, not the extent of the data: an
    independent MD of the same molecule at a lower temperature was flagged on
    25-31 % of its frames.
Equivalent hydrogens
    A rotated methyl group is the same geometry. Distances are the minimum over
    the permutations of hydrogen atoms bound to the same heavy atom (bonds from
    the first frame, 1.3x covalent radii), e.g. 3! x 2! = 12 for ethanol. The
    number of permutations is capped (``max_permutations``): groups beyond the cap
    are left unpermuted, and the domain says so (:attr:`ApplicabilityDomain.
    n_permutations_total`, a warning in the log).

A query costs one descriptor, a column gather per permutation and one distance
per permutation and reference frame (a matrix product: faster than k-d trees on
these descriptors, measured, see :meth:`ApplicabilityDomain._nearest`). A few
structures at a time (the calculator's one per call) run that product on one BLAS
thread (:func:`one_blas_thread`): on several it cost 10-40 times more. The fitted
state is plain arrays, saved as ``domain.npz`` beside a model's ``clusters.npz``.

A second score, :class:`QuestsDomain` (``--domain quests``, ``domain="quests"``;
extra ``quests``), replaces the frame distance by QUESTS' differential entropy dH
of the structure's most novel atomic environment against the data's environments,
calibrated the same way. Which one a model carries is chosen when it is saved
(:func:`make_domain`), and :func:`load_domain` reads either back; their comparison
on the shared data is in BENCHMARKS.md ("Two domain scores compared").
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
import os
from dataclasses import asdict, dataclass

import numpy as np

from . import clustering_options as options
from .descriptors import pair_indices, pairwise_distances
from .exceptions import FILE_READ_ERRORS, InputError

logger = logging.getLogger(__name__)

__all__ = [
    "DOMAIN_KINDS",
    "ApplicabilityDomain",
    "DomainSettings",
    "QuestsDomain",
    "QuestsDomainSettings",
    "hydrogen_groups",
    "load_domain",
    "make_domain",
    "require_domain",
]

#: Bond rule for the hydrogen groups: within this factor of the covalent radii.
BOND_FACTOR = 1.3
#: Query rows per block of the nearest-neighbour search (memory ~ CHUNK x R x 8 B).
CHUNK = 256
#: Structures per call up to which the look-up runs BLAS on one thread. Measured on
#: ethanol (5,000 reference frames, 12 permutations, 2 cores), one structure costs
#: 0.5 ms on one thread and 5-25 ms on two (thread start-up, and waiting for a
#: busy core); large batches (``ase-flatten predict``) keep every thread.
FEW_STRUCTURES = 16


@functools.lru_cache(maxsize=1)
def _threadpools():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # 15 ms to make: once per process


@contextlib.contextmanager
def one_blas_thread(active: bool = True):
    """BLAS on one thread inside the block (when ``active``), restored after.

    For products too small to gain from threads, where starting them costs more
    than the product itself. The limit holds for the whole process while the
    block runs (threadpoolctl), so keep the block short.
    """
    if not active:
        yield
        return
    with _threadpools().limit(limits=1, user_api="blas"):
        yield


@dataclass
class DomainSettings:
    """How the domain is calibrated.

    Attributes
    ----------
    percentile : float
        Percentile of the reference frames' nearest-neighbour distances taken as
        the threshold.
    exclude_frames : int
        Neighbours within this many frames (in trajectory order) of a reference
        frame are skipped in the calibration: 10 frames = 25 fs in data stored
        every 2.5 fs. Measured on the shared 500 K data (BENCHMARKS.md), the
        threshold rises from 0 to 4 frames and stays within 1-2 % from there
        to 40; on a 150-frame trajectory it keeps rising (the trajectory itself
        drifts), so a short window keeps unseen conformers out.
    permute_hydrogens : bool
        Minimise distances over permutations of equivalent hydrogens.
    max_permutations : int
        Cap on the number of permutations (each adds a distance per reference
        frame to every call).
    max_reference : int
        Reference frames kept: evenly spaced over the trajectory when the data
        holds more.
    """

    percentile: float = 99.5
    exclude_frames: int = 10
    permute_hydrogens: bool = True
    max_permutations: int = 64
    max_reference: int = 5000


def hydrogen_groups(numbers: np.ndarray, positions: np.ndarray) -> list[np.ndarray]:
    """Hydrogens bound to the same heavy atom, groups of two or more.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
        Atomic numbers.
    positions : ndarray, shape (N, 3)
        One frame (Å) defining the bonds.

    Returns
    -------
    list of ndarray
        Atom indices of each group, in atom order.
    """
    from ase.data import covalent_radii

    numbers = np.asarray(numbers)
    heavy = np.flatnonzero(numbers != 1)
    if len(heavy) == 0:
        return []
    owner = {}
    for h in np.flatnonzero(numbers == 1):
        d = np.linalg.norm(positions[heavy] - positions[h], axis=1)
        nearest = int(np.argmin(d))
        bond = BOND_FACTOR * (covalent_radii[1] + covalent_radii[numbers[heavy]])
        if d[nearest] <= bond[nearest]:
            owner.setdefault(int(heavy[nearest]), []).append(int(h))
    return [np.array(g) for _, g in sorted(owner.items()) if len(g) > 1]


def atom_permutations(
    n_atoms: int, groups: list[np.ndarray], cap: int
) -> tuple[np.ndarray, int]:
    """All permutations of atoms within each group, at most ``cap`` of them.

    Groups are taken in order while the product of their factorials stays within
    ``cap``; the others are left as they are.

    Returns
    -------
    perms : ndarray, shape (P, n_atoms)
        ``perms[p]`` maps new atom positions to old atom indices; row 0 is the
        identity.
    n_total : int
        Permutations there would be without the cap.
    """
    n_total = math.prod(math.factorial(len(g)) for g in groups)
    used, size = [], 1
    for g in groups:
        k = math.factorial(len(g))
        if size * k <= cap:
            used.append(g)
            size *= k
    perms = [np.arange(n_atoms)]
    for g in used:
        extended = []
        for base in perms:
            for order in itertools.permutations(g):
                p = base.copy()
                p[g] = base[list(order)]
                extended.append(p)
        perms = extended
    return np.array(perms), n_total


def column_permutations(perms: np.ndarray) -> np.ndarray:
    """Descriptor columns under each atom permutation.

    Parameters
    ----------
    perms : ndarray, shape (P, N)

    Returns
    -------
    ndarray, shape (P, N(N-1)/2)
        ``X[:, cols[p]]`` is the descriptor of the frames with atoms permuted
        by ``perms[p]``.
    """
    n_atoms = perms.shape[1]
    i, j = pair_indices(n_atoms)
    column = np.full((n_atoms, n_atoms), -1)
    column[i, j] = column[j, i] = np.arange(len(i))
    return np.array([column[p[i], p[j]] for p in perms])


def _training_frames(positions) -> np.ndarray:
    """``positions`` as floats, refused unless at least 2 frames (M, N, 3)."""
    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 3 or len(positions) < 2:
        raise InputError(
            f"the domain needs at least 2 frames of shape (N, 3), got {positions.shape}"
        )
    return positions


class _SavedDomain:
    """What both domain kinds share: the flag, and their ``domain.npz``."""

    def outside(self, positions) -> np.ndarray:
        """True for structures scoring above :attr:`threshold_` (:meth:`distance`)."""
        return self.distance(positions) > self.threshold_

    def save(self, path: str | os.PathLike) -> None:
        """Write the fitted domain to an npz, atomically."""
        from .files import save_npz

        save_npz(path, **self.state_arrays())

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a file written by :meth:`save` (either kind: :func:`load_domain`)."""
        domain = load_domain(path)
        if not isinstance(domain, cls):
            raise InputError(f"{path}: a {domain.kind} domain, not a {cls.kind} one")
        return domain


class ApplicabilityDomain(_SavedDomain):
    """Nearest-reference-frame distance and a time-separated threshold.

    Parameters
    ----------
    settings : DomainSettings, optional

    Attributes
    ----------
    numbers_ : ndarray, shape (N,)
    reference_indices_ : ndarray, shape (R,)
        Frames of the data kept as reference (trajectory order).
    reference_descriptors_ : ndarray, shape (R, N(N-1)/2)
        Their pairwise distances (Å).
    permutations_ : ndarray, shape (P, N)
        Atom permutations minimised over (row 0: identity).
    n_permutations_total : int
        Permutations of equivalent hydrogens without the cap.
    calibration_distances_ : ndarray, shape (R,)
        Each reference frame's distance to its nearest time-separated reference
        frame (Å).
    threshold_ : float
        Distance (Å) beyond which a structure is outside the domain.
    """

    kind = "distance"
    units = "Å"

    def __init__(self, settings: DomainSettings | None = None):
        self.settings = settings or DomainSettings()

    # -- fitting ---------------------------------------------------------------
    def fit(self, numbers, positions) -> ApplicabilityDomain:
        """Calibrate on frames ``positions`` (M, N, 3) in Å, in trajectory order."""
        s = self.settings
        positions = _training_frames(positions)
        self.numbers_ = np.asarray(numbers, dtype=int)
        n_frames, n_atoms = positions.shape[:2]
        n_ref = min(n_frames, s.max_reference)
        self.reference_indices_ = np.unique(
            np.linspace(0, n_frames - 1, n_ref).round().astype(int)
        )
        groups = hydrogen_groups(self.numbers_, positions[0])
        if not s.permute_hydrogens:
            groups = []
        self.permutations_, self.n_permutations_total = atom_permutations(
            n_atoms, groups, s.max_permutations
        )
        if len(self.permutations_) < self.n_permutations_total:
            logger.warning(
                "applicability domain: %d of %d permutations of equivalent "
                "hydrogens used (max_permutations=%d); groups beyond the cap are "
                "not permuted",
                len(self.permutations_),
                self.n_permutations_total,
                s.max_permutations,
            )
        self.reference_descriptors_ = pairwise_distances(
            positions[self.reference_indices_]
        )
        self.calibration_distances_ = self._calibrate()
        self.threshold_ = float(
            np.percentile(self.calibration_distances_, s.percentile)
        )
        logger.info(
            "applicability domain: %d reference frames, %d permutations, neighbours "
            "within %d frames skipped, threshold %.3f Å",
            len(self.reference_indices_),
            len(self.permutations_),
            s.exclude_frames,
            self.threshold_,
        )
        return self

    def _calibrate(self) -> np.ndarray:
        """Nearest time-separated reference frame of each reference frame (Å)."""
        X = self.reference_descriptors_
        best = np.full(len(X), np.inf)
        for cols in self._columns():
            nearest = self._nearest(X[:, cols], self.reference_indices_)
            np.minimum(best, nearest, out=best)
        return best

    def _window(self) -> int:
        """``exclude_frames``, shortened when the data is too short for it."""
        return _window(self.reference_indices_, self.settings.exclude_frames)

    # -- using it --------------------------------------------------------------
    def _nearest(self, queries: np.ndarray, times=None) -> np.ndarray:
        """Distance (Å) of each query row to its nearest reference frame.

        Brute force, block by block (:data:`CHUNK` rows): on these descriptors a
        matrix product beats k-d and ball trees (ethanol, 5,000 frames, 12
        permutations: 0.2-0.4 ms per structure, against 0.6-1.3 ms for scipy's
        cKDTree and 1.2-2 ms for scikit-learn's KDTree and NearestNeighbors).
        Re-measured on new MD frames (not reference frames) of a busy 2-core
        machine, one BLAS thread: 0.5-1.7 ms, against 2-4 ms for cKDTree (also
        on PCA-rotated descriptors), 3-4 ms for a BallTree, and 1 ms for a
        cKDTree over every permuted reference frame (10 ms for structures 15 %
        stretched). Call it for a few structures inside :func:`one_blas_thread`.

        Parameters
        ----------
        queries : ndarray, shape (Q, D)
        times : ndarray, shape (Q,), optional
            Frame index of each query in the data: reference frames within
            ``exclude_frames`` of it are skipped (the calibration).
        """
        X = self.reference_descriptors_
        norms = self._norms()
        window = self._window() if times is not None else None
        nearest = np.empty(len(queries), dtype=int)
        for start in range(0, len(queries), CHUNK):
            block = queries[start : start + CHUNK]
            d = block @ X.T
            d *= -2.0
            d += norms[None, :]
            if window is not None:
                gap = times[start : start + CHUNK, None] - self.reference_indices_
                d[np.abs(gap) <= window] = np.inf
            nearest[start : start + len(block)] = d.argmin(axis=1)
        # the exact distance to the nearest frame (the expansion above cancels)
        return np.linalg.norm(queries - X[nearest], axis=1)

    def _norms(self) -> np.ndarray:
        """Squared norms of the reference descriptors (cached)."""
        X = self.reference_descriptors_
        cached = getattr(self, "_norms_cache", None)
        if cached is None or cached[0] is not X:
            cached = self._norms_cache = (X, np.einsum("ij,ij->i", X, X))
        return cached[1]

    def _columns(self) -> np.ndarray:
        cols = getattr(self, "_cols", None)
        if cols is None or len(cols) != len(self.permutations_):
            cols = self._cols = column_permutations(self.permutations_)
        return cols

    def distance(self, positions) -> np.ndarray:
        """Distance (Å) of each structure to its nearest reference frame.

        Parameters
        ----------
        positions : ndarray, shape (M, N, 3) or (N, 3)
            Structures in Å, atoms in the data's order.

        Returns
        -------
        ndarray, shape (M,)
            The minimum over the hydrogen permutations of the descriptor
            distance to the nearest reference frame.
        """
        positions = np.asarray(positions, dtype=float)
        if positions.ndim == 2:
            positions = positions[None]
        if positions.shape[1] != len(self.numbers_):
            raise InputError(
                f"the domain was fitted on {len(self.numbers_)} atoms, got "
                f"{positions.shape[1]}"
            )
        X = pairwise_distances(positions)
        cols = self._columns()
        queries = X[:, cols].reshape(-1, X.shape[1])  # (M * P, D)
        with one_blas_thread(len(positions) <= FEW_STRUCTURES):
            nearest = self._nearest(queries)
        return nearest.reshape(len(X), len(cols)).min(axis=1)

    def summary(self) -> dict:
        """Settings and calibration as JSON-ready values."""
        return {
            **asdict(self.settings),
            "threshold": self.threshold_,
            "n_reference": int(len(self.reference_indices_)),
            "n_permutations": int(len(self.permutations_)),
            "n_permutations_total": int(self.n_permutations_total),
        }

    # -- persistence -----------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state and settings as plain arrays (for ``np.savez``)."""
        return {
            **{f"setting_{k}": np.asarray(v) for k, v in asdict(self.settings).items()},
            "numbers": self.numbers_,
            "reference_indices": self.reference_indices_,
            "reference_descriptors": self.reference_descriptors_,
            "permutations": self.permutations_,
            "n_permutations_total": np.asarray(self.n_permutations_total),
            "calibration_distances": self.calibration_distances_,
            "threshold": np.asarray(self.threshold_),
        }

    @classmethod
    def from_state_arrays(cls, arrays) -> ApplicabilityDomain:
        """Rebuild a fitted domain from :meth:`state_arrays`."""
        settings = DomainSettings(
            **{
                k: arrays[f"setting_{k}"].item()
                for k in DomainSettings.__dataclass_fields__
            }
        )
        domain = cls(settings)
        domain.numbers_ = np.asarray(arrays["numbers"], dtype=int)
        domain.reference_indices_ = np.asarray(arrays["reference_indices"])
        domain.reference_descriptors_ = np.asarray(arrays["reference_descriptors"])
        domain.permutations_ = np.asarray(arrays["permutations"], dtype=int)
        domain.n_permutations_total = int(arrays["n_permutations_total"])
        domain.calibration_distances_ = np.asarray(arrays["calibration_distances"])
        domain.threshold_ = float(arrays["threshold"])
        domain._check_state()
        return domain

    def _check_state(self) -> None:
        """Raise ValueError when the arrays do not fit together (a damaged file)."""
        n_atoms = self.numbers_.size if self.numbers_.ndim == 1 else 0
        n_pairs = n_atoms * (n_atoms - 1) // 2
        X, perms = self.reference_descriptors_, self.permutations_
        problems = []
        if self.numbers_.ndim != 1 or n_atoms < 2:
            problems.append(f"numbers of shape {self.numbers_.shape}")
        if X.ndim != 2 or X.shape[1] != n_pairs or len(X) < 1:
            problems.append(
                f"reference_descriptors of shape {X.shape}, expected (R, {n_pairs})"
            )
        elif not np.isfinite(X).all():
            problems.append("non-finite reference_descriptors")
        if self.reference_indices_.shape != X.shape[:1]:
            problems.append(
                f"reference_indices of shape {self.reference_indices_.shape}"
            )
        if self.calibration_distances_.shape != X.shape[:1]:
            problems.append(
                f"calibration_distances of shape {self.calibration_distances_.shape}"
            )
        if (
            perms.ndim != 2
            or perms.shape[1] != n_atoms
            or len(perms) < 1
            or not all(np.array_equal(np.sort(p), np.arange(n_atoms)) for p in perms)
        ):
            problems.append(f"permutations of shape {perms.shape} (not of the atoms)")
        if not np.isfinite(self.threshold_) or self.threshold_ < 0:
            problems.append(f"threshold {self.threshold_}")
        if problems:
            raise ValueError("; ".join(problems))


# -- the QUESTS domain ------------------------------------------------------------
#: The domain kinds: ``distance`` (:class:`ApplicabilityDomain`) and ``quests``
#: (:class:`QuestsDomain`).
DOMAIN_KINDS = options.DOMAIN_KINDS


@dataclass
class QuestsDomainSettings:
    """How the QUESTS domain is calibrated (as :class:`DomainSettings`).

    Attributes
    ----------
    percentile : float
        Percentile of the calibration frames' held-out scores taken as the
        threshold.
    exclude_frames : int
        Reference frames within this many frames (trajectory order) of a
        calibration frame are left out of its score.
    max_reference : int
        Reference frames kept, evenly spaced: every query costs one kernel per
        atom and reference environment.
    max_calibration : int
        Reference frames scored for the threshold (evenly spaced).
    bandwidth : float or None
        Kernel width in 1/Å; None: :func:`ase_flatten.quests.molecule_bandwidth`
        of the reference frames.
    seed : int
        Draws the frames the bandwidth is measured on.
    """

    percentile: float = 99.5
    exclude_frames: int = 10
    max_reference: int = 2000
    max_calibration: int = 1000
    bandwidth: float | None = None
    seed: int = 0


class QuestsDomain(_SavedDomain):
    """QUESTS' novelty dH of a structure's most novel atomic environment.

    A structure's score is the largest, over its atoms, of QUESTS' differential
    entropy dH (:func:`ase_flatten.quests.novelty`, nats) of the atom's
    environment against every atomic environment of the reference frames. It is
    outside the domain when the score exceeds a threshold calibrated as the
    distance domain's is: the ``percentile`` of the scores of reference frames
    against the reference frames more than ``exclude_frames`` away in the
    trajectory. QUESTS' descriptors are sorted per atom, so equivalent
    hydrogens need no permutations, and a score is a sum over atoms' neighbours
    rather than a distance between whole frames.

    Same interface as :class:`ApplicabilityDomain` (:meth:`distance` returns the
    score); the fitted state is plain arrays, saved as ``domain.npz`` with
    ``kind = "quests"``. Needs the extra ``quests``.

    Attributes
    ----------
    numbers_ : ndarray, shape (N,)
    reference_indices_ : ndarray, shape (R,)
    reference_descriptors_ : ndarray, shape (R * N, d)
        QUESTS descriptors of the reference frames' atoms (1/Å).
    bandwidth_ : float
        Kernel width (1/Å).
    calibration_indices_ : ndarray, shape (C,)
        Reference frames scored for the threshold (frame indices of the data).
    calibration_distances_ : ndarray, shape (C,)
        Their held-out scores (nats).
    threshold_ : float
        Score (nats) beyond which a structure is outside the domain.
    """

    kind = "quests"
    units = "nats"
    what = "the quests domain"

    def __init__(self, settings: QuestsDomainSettings | None = None):
        self.settings = settings or QuestsDomainSettings()
        if self.settings.bandwidth is not None and not self.settings.bandwidth > 0:
            raise InputError(
                f"the QUESTS bandwidth must be positive, got {self.settings.bandwidth}"
            )

    def fit(self, numbers, positions) -> QuestsDomain:
        """Calibrate on frames ``positions`` (M, N, 3) in Å, in trajectory order."""
        from . import quests

        s = self.settings
        positions = _training_frames(positions)
        self.numbers_ = np.asarray(numbers, dtype=int)
        n_frames = len(positions)
        self.reference_indices_ = _evenly(n_frames, s.max_reference)
        X = quests.frame_descriptors(
            self.numbers_, positions[self.reference_indices_], self.what
        )
        self.bandwidth_ = (
            float(s.bandwidth)
            if s.bandwidth is not None
            else quests.molecule_bandwidth(list(X), s.seed)
        )
        self.reference_descriptors_ = X.reshape(-1, X.shape[-1])
        pick = _evenly(len(self.reference_indices_), s.max_calibration)
        self.calibration_indices_ = self.reference_indices_[pick]
        self.calibration_distances_ = self._calibrate(X[pick])
        self.threshold_ = float(
            np.percentile(self.calibration_distances_, s.percentile)
        )
        logger.info(
            "QUESTS domain: %d reference frames, bandwidth %.4f 1/Å, neighbours "
            "within %d frames skipped, threshold dH %.3f",
            len(self.reference_indices_),
            self.bandwidth_,
            s.exclude_frames,
            self.threshold_,
        )
        return self

    def _calibrate(self, X: np.ndarray) -> np.ndarray:
        """Held-out score of the calibration frames ``X`` (C, N, d), nats."""
        from .quests import novelty

        n_atoms = X.shape[1]
        times = np.repeat(self.calibration_indices_, n_atoms)
        reference_times = np.repeat(self.reference_indices_, n_atoms)
        window = _window(self.reference_indices_, self.settings.exclude_frames)

        def skip(start, stop):
            gap = times[start:stop, None] - reference_times[None, :]
            return np.abs(gap) <= window

        scores = novelty(
            X.reshape(-1, X.shape[-1]),
            self.reference_descriptors_,
            self.bandwidth_,
            skip,
        )
        return scores.reshape(len(X), n_atoms).max(axis=1)

    def atom_scores(self, positions) -> np.ndarray:
        """dH (nats) of each atom's environment, shape (M, N)."""
        from .quests import frame_descriptors, novelty

        positions = np.asarray(positions, dtype=float)
        if positions.ndim == 2:
            positions = positions[None]
        if positions.ndim != 3 or positions.shape[1] != len(self.numbers_):
            raise InputError(
                f"the domain was fitted on {len(self.numbers_)} atoms, got "
                f"{positions.shape[1:2]}"
            )
        X = frame_descriptors(self.numbers_, positions, self.what)
        with one_blas_thread(len(positions) <= FEW_STRUCTURES):
            scores = novelty(
                X.reshape(-1, X.shape[-1]), self.reference_descriptors_, self.bandwidth_
            )
        return scores.reshape(len(positions), -1)

    def distance(self, positions) -> np.ndarray:
        """Score (nats) of each structure: its most novel environment's dH.

        Parameters
        ----------
        positions : ndarray, shape (M, N, 3) or (N, 3)
            Structures in Å, atoms in the data's order.

        Returns
        -------
        ndarray, shape (M,)
        """
        return self.atom_scores(positions).max(axis=1)

    def summary(self) -> dict:
        """Settings and calibration as JSON-ready values."""
        return {
            "kind": self.kind,
            **asdict(self.settings),
            "threshold": self.threshold_,
            "bandwidth_used": self.bandwidth_,
            "n_reference": int(len(self.reference_indices_)),
            "units": "dH, nats",
        }

    # -- persistence -----------------------------------------------------------
    def state_arrays(self) -> dict[str, np.ndarray]:
        """Fitted state and settings as plain arrays (for ``np.savez``)."""
        settings = asdict(self.settings)
        settings["bandwidth"] = (
            np.nan if settings["bandwidth"] is None else settings["bandwidth"]
        )
        return {
            "kind": np.asarray(self.kind),
            **{f"setting_{k}": np.asarray(v) for k, v in settings.items()},
            "numbers": self.numbers_,
            "reference_indices": self.reference_indices_,
            "reference_descriptors": self.reference_descriptors_,
            "bandwidth": np.asarray(self.bandwidth_),
            "calibration_indices": self.calibration_indices_,
            "calibration_distances": self.calibration_distances_,
            "threshold": np.asarray(self.threshold_),
        }

    @classmethod
    def from_state_arrays(cls, arrays) -> QuestsDomain:
        """Rebuild a fitted domain from :meth:`state_arrays`."""
        values = {
            k: arrays[f"setting_{k}"].item()
            for k in QuestsDomainSettings.__dataclass_fields__
        }
        if not np.isfinite(values["bandwidth"]):
            values["bandwidth"] = None
        domain = cls(QuestsDomainSettings(**values))
        domain.numbers_ = np.asarray(arrays["numbers"], dtype=int)
        domain.reference_indices_ = np.asarray(arrays["reference_indices"])
        domain.reference_descriptors_ = np.asarray(
            arrays["reference_descriptors"], dtype=float
        )
        domain.bandwidth_ = float(arrays["bandwidth"])
        domain.calibration_indices_ = np.asarray(arrays["calibration_indices"])
        domain.calibration_distances_ = np.asarray(arrays["calibration_distances"])
        domain.threshold_ = float(arrays["threshold"])
        domain._check_state()
        return domain

    def _check_state(self) -> None:
        """Raise ValueError when the arrays do not fit together (a damaged file)."""
        from .quests import neighbours

        n_atoms = self.numbers_.size if self.numbers_.ndim == 1 else 0
        X = self.reference_descriptors_
        width = 2 * neighbours(max(n_atoms, 2)) - 1
        problems = []
        if self.numbers_.ndim != 1 or n_atoms < 2:
            problems.append(f"numbers of shape {self.numbers_.shape}")
        expected = (len(self.reference_indices_) * n_atoms, width)
        if X.shape != expected or len(X) < 1:
            problems.append(
                f"reference_descriptors of shape {X.shape}, expected {expected}"
            )
        elif not np.isfinite(X).all():
            problems.append("non-finite reference_descriptors")
        if self.calibration_distances_.shape != self.calibration_indices_.shape:
            problems.append(
                f"calibration_distances of shape {self.calibration_distances_.shape}"
            )
        if not (np.isfinite(self.bandwidth_) and self.bandwidth_ > 0):
            problems.append(f"bandwidth {self.bandwidth_}")
        if not np.isfinite(self.threshold_):
            problems.append(f"threshold {self.threshold_}")
        if problems:
            raise ValueError("; ".join(problems))


def _evenly(n: int, at_most: int) -> np.ndarray:
    """At most ``at_most`` of ``range(n)``, evenly spaced, first and last kept."""
    return np.unique(np.linspace(0, n - 1, min(n, at_most)).round().astype(int))


def _window(times: np.ndarray, window: int) -> int:
    """``window``, shortened when ``times`` span too few frames for it.

    Every frame needs a neighbour farther than the window: the middle frame of a
    trajectory spanning ``S`` frames has none beyond ``S / 2``.
    """
    longest = (int(times[-1] - times[0]) + 1) // 2 - 1
    if window > longest:
        logger.warning(
            "applicability domain: %d frames are too few to skip neighbours "
            "within %d frames; skipping within %d",
            int(times[-1] - times[0]) + 1,
            window,
            max(longest, 0),
        )
        return max(longest, 0)
    return window


def make_domain(kind: str = "distance"):
    """An unfitted domain of ``kind`` (:data:`DOMAIN_KINDS`), default settings.

    Raises InputError for an unknown kind or a missing library (``quests``).
    """
    require_domain(kind)
    return QuestsDomain() if kind == "quests" else ApplicabilityDomain()


def require_domain(kind: str) -> None:
    """Raise InputError now when ``kind`` is unknown or its library missing."""
    if kind not in DOMAIN_KINDS:
        raise InputError(
            f"unknown domain {kind!r}; choose one of {', '.join(DOMAIN_KINDS)}"
        )
    if kind == "quests":
        from .quests import _import_quests

        _import_quests("--domain quests")


def load_domain(path: str | os.PathLike):
    """Read a ``domain.npz`` of either kind (files without ``kind``: distance)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
            kind = str(arrays.pop("kind", np.asarray("distance")))
            if kind not in DOMAIN_KINDS:
                raise ValueError(f"unknown domain kind {kind!r}")
            cls = QuestsDomain if kind == "quests" else ApplicabilityDomain
            return cls.from_state_arrays(arrays)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except FILE_READ_ERRORS as exc:
        raise InputError(
            f"{path}: not a domain file written by ase-flatten "
            f"({type(exc).__name__}: {exc})"
        ) from exc
