"""Model backends: one module per library, all behind :class:`~.base.Backend`.

Backends are found by name in the entry-point group ``ase_flatten.backends``
(``name = package.module:Class``). ase-flatten's own backends are registered there
in its setup.cfg, and any installed package can add one the same way (docs,
tutorials/backend, "Writing a backend"). The built-in table below is also used
directly, so a source checkout that was never installed still has its own backends.

Nothing is imported to list the backends: an entry point is loaded only when its
backend is used, so listing or choosing a backend never needs the optional
dependencies of the others, and a plugin that fails to load affects only itself.
"""

from __future__ import annotations

import importlib
import logging
from importlib import metadata

from ..exceptions import InputError
from .base import Backend

logger = logging.getLogger(__name__)

#: the entry-point group a backend registers in
GROUP = "ase_flatten.backends"

#: ase-flatten's own backends: name -> "module:class" (as in setup.cfg)
BACKENDS = {
    "sgdml": "ase_flatten.backends.sgdml:SGDMLBackend",
    "schnet": "ase_flatten.backends.schnet:SchNetBackend",
    "gap": "ase_flatten.backends.gap:GAPBackend",
    "ase": "ase_flatten.backends.ase:ASEBackend",
    "mace": "ase_flatten.backends.mace:MACEBackend",
}

__all__ = [
    "BACKENDS",
    "GROUP",
    "Backend",
    "available_backends",
    "backend_class",
    "load_backends",
    "make_backend",
]

_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _origin(entry_point) -> str:
    """The distribution that declares ``entry_point``, for messages."""
    dist = getattr(entry_point, "dist", None)
    if dist is None:
        return "an unknown package"
    return f"package {dist.metadata['Name']} {dist.version}"


def plugin_entry_points() -> dict[str, metadata.EntryPoint]:
    """Entry points of the group that add backends beyond the built-in ones.

    A name declared twice keeps the first distribution in name order (with a
    warning); an entry point that names a built-in backend is used only when it
    points at the same class.
    """
    found: dict[str, metadata.EntryPoint] = {}
    points = sorted(
        metadata.entry_points(group=GROUP),
        key=lambda ep: (ep.name, _origin(ep), ep.value),
    )
    for ep in points:
        if ep.name in BACKENDS:
            if ep.value != BACKENDS[ep.name]:
                _warn_once(
                    f"backend plugin {ep.name!r} from {_origin(ep)} ignored: "
                    "the name belongs to a built-in backend"
                )
            continue
        if ep.name in found:
            if found[ep.name].value != ep.value:
                _warn_once(
                    f"backend plugin {ep.name!r} from {_origin(ep)} ignored: "
                    f"{_origin(found[ep.name])} declares it too"
                )
            continue
        found[ep.name] = ep
    return found


def available_backends() -> list[str]:
    """Names of every backend, built-in first, then plugins; imports nothing."""
    return [*BACKENDS, *sorted(plugin_entry_points())]


def backend_class(name: str) -> type[Backend]:
    """The Backend subclass registered as ``name`` (imports only that one).

    Raises
    ------
    InputError
        Unknown name, or a plugin whose class cannot be loaded or is not a
        :class:`Backend` named ``name``.
    """
    if name in BACKENDS:
        module, cls = BACKENDS[name].split(":")
        return getattr(importlib.import_module(module), cls)
    plugins = plugin_entry_points()
    if name not in plugins:
        raise InputError(
            f"unknown backend {name!r}; choose one of "
            f"{', '.join([*BACKENDS, *sorted(plugins)])}"
        )
    return _load_plugin(plugins[name])


def _load_plugin(ep: metadata.EntryPoint) -> type[Backend]:
    where = f"backend plugin {ep.name!r} ({ep.value}, from {_origin(ep)})"
    try:
        cls = ep.load()
    except Exception as exc:  # a plugin's own failure, reported as its problem
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise InputError(
            f"{where} failed to load: {type(exc).__name__}: {message}"
        ) from exc
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise InputError(f"{where} is not a subclass of ase_flatten.backends.Backend")
    if cls.name != ep.name:
        raise InputError(f"{where}: the class is named {cls.name!r}, not {ep.name!r}")
    return cls


def load_backends() -> dict[str, type[Backend]]:
    """Every backend class that loads; one warning line for each that does not.

    Imports every backend module (and so its library): for listings and tests,
    not for normal use.
    """
    classes = {}
    for name in available_backends():
        try:
            classes[name] = backend_class(name)
        except InputError as exc:  # names the plugin, its package and the problem
            _warn_once(str(exc))
    return classes


def make_backend(name: str, random_state: int = 0, **params) -> Backend:
    """A new, untrained backend ``name`` with hyperparameters ``params``."""
    return backend_class(name)(random_state=random_state, **params)
