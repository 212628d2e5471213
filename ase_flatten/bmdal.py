"""bmdal-reg (Holzmüller et al., JMLR 2023): the one module that imports it
(extra ``lcmd``).

Batch active learning for regression by kernel selection: here its LCMD
(largest cluster maximum distance) selection on a linear kernel of per-structure
last-layer features, in TP mode (the training frames count as already chosen),
as bmdal-reg's ``select_batch(base_kernel="linear", selection_method="lcmd",
sel_with_train=True)``. The features come from the backend
(:meth:`ase_flatten.backends.schnet.SchNetBackend.last_layer_features`):
bmdal-reg's own ``ll`` and ``grad`` kernels need a model of plain ``nn.Linear``
layers taking one tensor, which a SchNet taking a neighbour list is not.

bmdal-reg 3.0.2, the latest release, still spells ``np.Inf`` in every selection
method (``bmdal/selection.py``); NumPy 2.0 removed it, and the pinned stack has
NumPy 2. :func:`_import_bmdal` gives that one module a view of numpy that has
``Inf`` (numpy itself is left as it is).
"""

from __future__ import annotations

import numpy as np

from .exceptions import InputError


class _NumpyWithInf:
    """numpy as bmdal-reg's selection module expects it: ``np.Inf`` included."""

    Inf = np.inf

    def __getattr__(self, name):
        return getattr(np, name)


def _import_bmdal():
    try:
        import torch
        from bmdal_reg.bmdal import selection
        from bmdal_reg.bmdal.algorithms import select_batch
        from bmdal_reg.bmdal.feature_data import TensorFeatureData
    except ImportError as exc:
        raise InputError(
            "the lcmd strategy needs bmdal-reg: pip install 'ase-flatten[lcmd]'"
        ) from exc
    if not hasattr(selection.np, "Inf"):  # NumPy >= 2.0
        selection.np = _NumpyWithInf()
    return torch, select_batch, TensorFeatureData


def lcmd_select(train: np.ndarray, pool: np.ndarray, k: int) -> np.ndarray:
    """LCMD picks of ``k`` pool rows given the training rows.

    Parameters
    ----------
    train : ndarray, shape (T, F)
        Features of the frames chosen so far.
    pool : ndarray, shape (P, F)
        Features of the candidates.
    k : int
        Picks wanted (``k <= P``).

    Returns
    -------
    ndarray, shape (k,)
        Distinct row indices into ``pool``, in the order LCMD chose them.
        LCMD has no random choice: the same features give the same picks.
    """
    torch, select_batch, TensorFeatureData = _import_bmdal()
    if not 0 < k <= len(pool):
        raise InputError(f"LCMD: cannot pick {k} of {len(pool)} candidates")
    data = {
        "train": TensorFeatureData(
            torch.as_tensor(np.asarray(train), dtype=torch.float64)
        ),
        "pool": TensorFeatureData(
            torch.as_tensor(np.asarray(pool), dtype=torch.float64)
        ),
    }
    picks, _ = select_batch(
        batch_size=k,
        models=[torch.nn.Identity()],  # one kernel; the linear one ignores it
        data=data,
        y_train=None,
        base_kernel="linear",
        kernel_transforms=[],
        selection_method="lcmd",
        sel_with_train=True,
    )
    return picks.cpu().numpy().astype(int)
