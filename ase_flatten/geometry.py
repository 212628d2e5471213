"""A cheap sanity check of a structure's size against the model's training data.

The applicability domain (``domain.py``) is off by default in the calculator,
because it costs a search over the reference frames. Without it, a molecule
scaled 20x got an energy of -234 eV and no word. This check costs one distance
matrix per structure (the calculator computes it anyway for ``MIN_DISTANCE``):
the shortest and the longest interatomic distance of a structure must lie within
the range the training data had, widened by :data:`SHRINK` below and
:data:`STRETCH` above. It catches scaled, exploded or collapsed structures, not
subtle ones: that is the domain's job.

The range is recorded in ``model.json`` (``distance_range``) when a model is
saved with its data; older models take it from their ``domain.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SHRINK", "STRETCH", "DistanceRange", "distance_extremes"]

#: A structure's shortest distance may fall to this share of the data's smallest.
SHRINK = 0.75
#: A structure's shortest or longest distance may grow to this factor of the
#: data's largest (a 500 K MD of ethanol spans 2.2-3.9 Å in its longest distance).
STRETCH = 1.5


def distance_extremes(positions, chunk: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Shortest and longest interatomic distance (Å) of each frame.

    Parameters
    ----------
    positions : ndarray, shape (M, N, 3) or (N, 3)
    chunk : int
        Frames per block (bounds memory).

    Returns
    -------
    shortest, longest : ndarray, shape (M,)
    """
    from .descriptors import pairwise_distances

    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 2:
        positions = positions[None]
    shortest = np.empty(len(positions))
    longest = np.empty(len(positions))
    for start in range(0, len(positions), chunk):
        d = pairwise_distances(positions[start : start + chunk])
        shortest[start : start + chunk] = d.min(axis=1)
        longest[start : start + chunk] = d.max(axis=1)
    return shortest, longest


@dataclass(frozen=True)
class DistanceRange:
    """The shortest and longest interatomic distances of the training data (Å).

    Attributes
    ----------
    shortest : tuple of float
        Smallest and largest per-frame shortest distance.
    longest : tuple of float
        Smallest and largest per-frame longest distance.
    """

    shortest: tuple[float, float]
    longest: tuple[float, float]

    @classmethod
    def fit(cls, positions) -> DistanceRange:
        """The range of frames ``positions`` (M, N, 3) in Å."""
        shortest, longest = distance_extremes(positions)
        return cls(
            (float(shortest.min()), float(shortest.max())),
            (float(longest.min()), float(longest.max())),
        )

    @classmethod
    def from_descriptors(cls, X) -> DistanceRange:
        """The range of pairwise-distance descriptors ``X`` (M, N(N-1)/2) in Å."""
        X = np.asarray(X, dtype=float)
        shortest, longest = X.min(axis=1), X.max(axis=1)
        return cls(
            (float(shortest.min()), float(shortest.max())),
            (float(longest.min()), float(longest.max())),
        )

    @classmethod
    def from_meta(cls, value) -> DistanceRange:
        """Read ``model.json``'s ``distance_range``; ValueError when damaged."""
        try:
            pairs = [
                tuple(float(x) for x in value[key]) for key in ("shortest", "longest")
            ]
        except (TypeError, KeyError, ValueError) as exc:
            raise ValueError(f"distance_range is not a range: {value!r}") from exc
        for pair in pairs:
            if len(pair) != 2 or not (0 < pair[0] <= pair[1] < np.inf):
                raise ValueError(f"distance_range is not a range: {value!r}")
        return cls(*pairs)

    def to_meta(self) -> dict:
        """JSON-ready form for ``model.json``."""
        return {"shortest": list(self.shortest), "longest": list(self.longest)}

    def inside(self, shortest, longest) -> np.ndarray:
        """Whether each structure's extreme distances lie in the widened range."""
        shortest, longest = np.asarray(shortest), np.asarray(longest)
        return (
            (shortest >= SHRINK * self.shortest[0])
            & (shortest <= STRETCH * self.shortest[1])
            & (longest >= SHRINK * self.longest[0])
            & (longest <= STRETCH * self.longest[1])
        )

    def describe(self, shortest: float, longest: float) -> str:
        """One sentence comparing a structure's extremes with the data's."""
        return (
            f"its interatomic distances span {shortest:.2f}-{longest:.2f} Å, the "
            f"training data's {self.shortest[0]:.2f}-{self.longest[1]:.2f} Å "
            f"(shortest {self.shortest[0]:.2f}-{self.shortest[1]:.2f}, longest "
            f"{self.longest[0]:.2f}-{self.longest[1]:.2f} Å)"
        )
