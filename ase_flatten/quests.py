"""QUESTS (Schwalbe-Koda et al., 2025) for single molecules: the one module that
imports the ``quests`` library (extra ``quests``).

QUESTS describes each atom by the sorted, cutoff-weighted inverse distances to
its ``k`` nearest neighbours and compares environments with a Gaussian kernel
of width ``bandwidth`` (1/Å). Its defaults assume condensed phases, and two of
them do not fit a molecule of 9-42 atoms in vacuum:

``k``
    the default 32 neighbours exceed an ethanol's 8 other atoms (the descriptor
    is zero-padded); here ``k = min(32, N - 1)``, every other atom of a small
    molecule. The cutoff stays at QUESTS' 5 Å.
``bandwidth``
    QUESTS' 0.015 and its ``get_bandwidth`` come from the volume per atom of
    periodic cells, which a molecule in vacuum does not have. Here the default
    is set from the data: the median, over the atomic environments of a seeded
    sample of up to :data:`BANDWIDTH_FRAMES` frames, of the distance to the
    nearest environment of another frame (0.049 1/Å on 150 ethanol frames at
    500 K). A kernel that wide sees about one neighbour per environment, so
    the novelty ``dH = -log(sum of kernels)`` of a frame neither saturates (every
    environment new, as with a much narrower kernel) nor flattens out (every
    environment covered, as with a much wider one).

The same descriptors and kernel give a structure's novelty against a reference
set (:func:`novelty`): QUESTS' differential entropy ``dH(x | Y) = -log sum_j
exp(-|x - y_j|^2 / (2 h^2))`` of each atomic environment ``x`` (nats), the
score of the ``quests`` applicability domain (:class:`ase_flatten.domain.
QuestsDomain`).

MSC selection costs time quadratic in the frames it is given (its per-frame
minimum is a Python loop over all remaining environments), so a larger pool is
pre-thinned to :data:`MSC_MAX_FRAMES` frames drawn at random (seeded), which
keeps the pool's distribution for QUESTS to compress.
"""

from __future__ import annotations

import logging

import numpy as np

from .exceptions import InputError

logger = logging.getLogger(__name__)

QUESTS_K = 32  #: QUESTS' default number of neighbours
QUESTS_CUTOFF = 5.0  #: QUESTS' default cutoff, Å
BANDWIDTH_FRAMES = 200  #: frames the data-driven bandwidth is measured on
MSC_MAX_FRAMES = 2000  #: larger pools are pre-thinned to this many frames


#: Query environments per block of :func:`novelty` (memory ~ NOVELTY_CHUNK x R x 8 B).
NOVELTY_CHUNK = 256


def _import_quests(what: str = "the quests strategy"):
    try:
        from quests.compression import DatasetCompressor
        from quests.descriptor import get_descriptors
    except ImportError as exc:
        raise InputError(
            f"{what} needs QUESTS: pip install 'ase-flatten[quests]'"
        ) from exc
    return DatasetCompressor, get_descriptors


def neighbours(n_atoms: int) -> int:
    """QUESTS' ``k`` for a molecule of ``n_atoms``: at most every other atom."""
    return max(1, min(QUESTS_K, n_atoms - 1))


def environment_descriptors(numbers: np.ndarray, positions: np.ndarray) -> list:
    """QUESTS descriptors of each frame, ``(N, 2k - 1)`` per frame.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
    positions : ndarray, shape (M, N, 3)
        Frames in Å (no periodic cell).
    """
    from ase import Atoms

    _, get_descriptors = _import_quests()
    k = neighbours(len(numbers))
    return [
        get_descriptors([Atoms(numbers, p)], k=k, cutoff=QUESTS_CUTOFF)
        for p in np.asarray(positions)
    ]


def frame_descriptors(
    numbers: np.ndarray, positions: np.ndarray, what: str = "the quests domain"
) -> np.ndarray:
    """QUESTS descriptors of every atom of every frame, in one array.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
    positions : ndarray, shape (M, N, 3)
        Frames in Å (no periodic cell).
    what : str
        Names the caller in the message when QUESTS is missing.

    Returns
    -------
    ndarray, shape (M, N, 2k - 1)
        Atom ``i`` of frame ``m`` at ``[m, i]`` (``k``: :func:`neighbours`).
    """
    from ase import Atoms

    _, get_descriptors = _import_quests(what)
    positions = np.asarray(positions, dtype=float)
    n_frames, n_atoms = positions.shape[:2]
    k = neighbours(n_atoms)
    if n_frames == 0:
        return np.zeros((0, n_atoms, 2 * k - 1))
    X = get_descriptors(
        [Atoms(numbers, p) for p in positions], k=k, cutoff=QUESTS_CUTOFF
    )
    return X.reshape(n_frames, n_atoms, -1)


def novelty(
    queries: np.ndarray,
    reference: np.ndarray,
    bandwidth: float,
    skip=None,
) -> np.ndarray:
    """QUESTS' differential entropy dH of each query environment (nats).

    ``dH(x | Y) = -log sum_j exp(-|x - y_j|^2 / (2 h^2))``, as
    ``quests.entropy.delta_entropy`` computes it (the same numbers, test), in
    blocks of :data:`NOVELTY_CHUNK` queries and as a log-sum-exp, so an
    environment far from every reference one gets a large finite dH instead of
    ``-log 0``.

    Parameters
    ----------
    queries : ndarray, shape (Q, d)
    reference : ndarray, shape (R, d)
    bandwidth : float
        ``h``, 1/Å (the descriptors' unit).
    skip : callable, optional
        ``skip(start, stop)`` gives a boolean (stop - start, R) array of the
        reference environments to leave out for queries ``start:stop`` (the
        domain's time-separated calibration).

    Returns
    -------
    ndarray, shape (Q,)
        dH; low: the environment is well covered, high: new.
    """
    from scipy.special import logsumexp

    queries = np.asarray(queries, dtype=float)
    reference = np.asarray(reference, dtype=float)
    norms = np.einsum("ij,ij->i", reference, reference)
    scale = -0.5 / bandwidth**2
    out = np.empty(len(queries))
    for start in range(0, len(queries), NOVELTY_CHUNK):
        block = queries[start : start + NOVELTY_CHUNK]
        d2 = block @ reference.T
        d2 *= -2.0
        d2 += norms[None, :]
        d2 += np.einsum("ij,ij->i", block, block)[:, None]
        np.maximum(d2, 0.0, out=d2)
        d2 *= scale
        if skip is not None:
            d2[skip(start, start + len(block))] = -np.inf
        out[start : start + len(block)] = -logsumexp(d2, axis=1)
    return out


def molecule_bandwidth(descriptors: list, seed: int = 0) -> float:
    """The data-driven bandwidth (module docstring), 1/Å.

    Parameters
    ----------
    descriptors : list of ndarray
        Per-frame environment descriptors (:func:`environment_descriptors`).
    seed : int
        Draws the frames it is measured on when there are more than
        :data:`BANDWIDTH_FRAMES`.
    """
    from scipy.spatial import cKDTree

    if len(descriptors) < 2:
        raise InputError("a QUESTS bandwidth needs at least 2 frames")
    rng = np.random.default_rng(seed)
    pick = np.arange(len(descriptors))
    if len(pick) > BANDWIDTH_FRAMES:
        pick = np.sort(rng.choice(pick, BANDWIDTH_FRAMES, replace=False))
    X = np.concatenate([descriptors[i] for i in pick])
    frame = np.repeat(np.arange(len(pick)), [len(descriptors[i]) for i in pick])
    n_atoms = len(descriptors[pick[0]])
    # an environment's nearest neighbours within its own frame are skipped
    distance, index = cKDTree(X).query(X, k=n_atoms + 1)
    other = frame[index] != frame[:, None]
    nearest = np.where(other, distance, np.inf).min(axis=1)
    return float(np.median(nearest))


def msc_select(
    numbers: np.ndarray,
    positions: np.ndarray,
    n: int,
    bandwidth: float | None = None,
    seed: int = 0,
    source: str = "<frames>",
) -> np.ndarray:
    """QUESTS' minimum-set-cover (MSC) selection of ``n`` frames.

    Parameters
    ----------
    numbers : ndarray, shape (N,)
    positions : ndarray, shape (M, N, 3)
        The pool, in Å.
    n : int
        Frames wanted (``n <= M``).
    bandwidth : float, optional
        Kernel width in 1/Å; by default :func:`molecule_bandwidth` of the pool.
    seed : int
        Pre-thins a pool of more than :data:`MSC_MAX_FRAMES` frames and draws the
        frames the bandwidth is measured on. MSC itself has no random choice.
    source : str
        Names the data in messages.

    Returns
    -------
    ndarray, shape (n,)
        Distinct indices into ``positions``, in the order MSC chose them.
    """
    if bandwidth is not None and not bandwidth > 0:
        raise InputError(f"the QUESTS bandwidth must be positive, got {bandwidth}")
    DatasetCompressor, _ = _import_quests()
    from ase import Atoms

    positions = np.asarray(positions)
    rng = np.random.default_rng(seed)
    frames = np.arange(len(positions))
    if len(frames) > max(n, MSC_MAX_FRAMES):
        frames = np.sort(rng.choice(frames, max(n, MSC_MAX_FRAMES), replace=False))
        logger.info(
            "%s: QUESTS MSC on %d of the pool's %d frames (drawn at random)",
            source,
            len(frames),
            len(positions),
        )
    descriptors = environment_descriptors(numbers, positions[frames])
    if bandwidth is None:
        bandwidth = molecule_bandwidth(descriptors, seed)
        logger.info("%s: QUESTS bandwidth %.4f 1/Å (from the data)", source, bandwidth)
    atoms = [Atoms(numbers, p) for p in positions[frames]]
    table = dict(zip(map(id, atoms), descriptors, strict=True))
    compressor = DatasetCompressor(
        atoms, descriptor_fn=lambda a: table[id(a)], bandwidth=bandwidth
    )
    picked = np.asarray(compressor.get_indices(method="msc", size=n), dtype=int)
    return frames[picked]
