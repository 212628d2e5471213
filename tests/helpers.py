"""Helpers shared by the tests."""

import os

import numpy as np
import pytest

from ase_flatten.data import Dataset


def random_dataset(n_frames=60, n_atoms=5, seed=0, source="<random>") -> Dataset:
    """Synthetic labelled frames for unit tests of the arithmetic."""
    rng = np.random.default_rng(seed)
    base = rng.normal(scale=1.5, size=(n_atoms, 3))
    positions = base + rng.normal(scale=0.1, size=(n_frames, n_atoms, 3))
    numbers = rng.integers(1, 9, size=n_atoms)
    return Dataset(
        numbers,
        positions,
        rng.normal(size=n_frames),
        rng.normal(size=(n_frames, n_atoms, 3)),
        source=source,
    )


class PlantedPayload:
    """Pickles to a call that creates the folder ``marker``: unpickling runs code.

    Plant it in a model file; if loading the file ever unpickles it, ``marker``
    appears.
    """

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch on one thread where OMP_NUM_THREADS=1 asks for it (import it to use)."""
    import torch

    threads = torch.get_num_threads()
    if os.environ.get("OMP_NUM_THREADS") == "1":
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
