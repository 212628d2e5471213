"""Model backends: one module per library, all behind :class:`~.base.Backend`.

Backend modules import their library lazily, so listing or choosing a backend
never needs the optional dependencies of the others.
"""

from __future__ import annotations

import importlib

from ..exceptions import InputError
from .base import Backend

#: backend name -> "module:class"
BACKENDS = {
    "sgdml": "ase_flatten.backends.sgdml:SGDMLBackend",
    "schnet": "ase_flatten.backends.schnet:SchNetBackend",
    "gap": "ase_flatten.backends.gap:GAPBackend",
    "ase": "ase_flatten.backends.ase:ASEBackend",
}

__all__ = ["BACKENDS", "Backend", "backend_class", "make_backend"]


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name``."""
    try:
        module, cls = BACKENDS[name].split(":")
    except KeyError:
        raise InputError(
            f"unknown backend {name!r}; choose one of {', '.join(BACKENDS)}"
        ) from None
    return getattr(importlib.import_module(module), cls)


def make_backend(name: str, random_state: int = 0, **params) -> Backend:
    """A new, untrained backend ``name`` with hyperparameters ``params``."""
    return backend_class(name)(random_state=random_state, **params)
