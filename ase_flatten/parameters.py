"""Allowed values of parameters, declared once and checked once: one vocabulary.

The kinds of value a parameter accepts (:class:`Integer`, :class:`Real`,
:class:`Boolean`, :class:`Options`, :class:`Pattern`, :class:`ListOf`,
:class:`Mapping`), each with ``accepts(value)`` and ``describe()``, as
scikit-learn's ``_parameter_constraints``. Backends declare
``parameter_constraints`` with them, for every name in their ``defaults`` (a list
of kinds, any one may match; ``None`` in the list allows null), and
:meth:`Backend.__init__ <ase_flatten.backends.base.Backend>` calls
:func:`check_parameters`, so a bad value fails before any training with one line,
``sgdml: parameter use_sym must be true or false, got 'maybe'``.
:class:`~ase_flatten.clustering.TwoStageClustering` and
:class:`~ase_flatten.selection.flatten.SelectionConfig` check their parameters
with the same kinds, in their own words.

Values arrive from Python or from ``-p KEY=VALUE`` (JSON when it parses), so the
descriptions use JSON's words (true/false, null). Backends import the vocabulary
as ``ase_flatten.backends.parameters``.
"""

from __future__ import annotations

import math
import numbers
import re
from dataclasses import dataclass

from .exceptions import InputError

__all__ = [
    "Boolean",
    "Integer",
    "ListOf",
    "Mapping",
    "Options",
    "Pattern",
    "Real",
    "check_choice",
    "check_parameters",
    "check_positive_int",
]


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _range(low, high, left: str, right: str) -> str:
    if high is None:
        return f"{'>' if left == '(' else '>='} {low:g}"
    if low is None:
        return f"{'<' if right == ')' else '<='} {high:g}"
    return f"in {left}{low:g}, {high:g}{right}"


@dataclass(frozen=True)
class Integer:
    """A whole number (not a bool) in ``[low, high]``; None leaves a side open."""

    low: int | None = None
    high: int | None = None

    def accepts(self, value) -> bool:
        return (
            isinstance(value, numbers.Integral)
            and not isinstance(value, bool)
            and (self.low is None or value >= self.low)
            and (self.high is None or value <= self.high)
        )

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "an integer"
        return "an integer " + _range(self.low, self.high, "[", "]")


@dataclass(frozen=True)
class Real:
    """A finite number (not a bool) between ``low`` and ``high``.

    ``closed`` says which bounds are allowed values: "both", "left", "right" or
    "neither".
    """

    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def accepts(self, value) -> bool:
        if not _is_number(value) or not math.isfinite(value):
            return False
        left = self.closed in ("both", "left")
        right = self.closed in ("both", "right")
        if self.low is not None and (
            value < self.low or (value == self.low and not left)
        ):
            return False
        return self.high is None or not (
            value > self.high or (value == self.high and not right)
        )

    def describe(self) -> str:
        if self.low is None and self.high is None:
            return "a number"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return "a number " + _range(self.low, self.high, left, right)


@dataclass(frozen=True)
class Boolean:
    """True or False (not 0/1, not a string)."""

    def accepts(self, value) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


@dataclass(frozen=True)
class Options:
    """One of the given strings."""

    values: tuple[str, ...]

    def accepts(self, value) -> bool:
        return isinstance(value, str) and value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(self.values)


@dataclass(frozen=True)
class Pattern:
    """A string matching ``regex`` in full, described to the user as ``text``."""

    regex: str
    text: str

    def accepts(self, value) -> bool:
        return isinstance(value, str) and re.fullmatch(self.regex, value) is not None

    def describe(self) -> str:
        return self.text


@dataclass(frozen=True)
class ListOf:
    """A non-empty list (or tuple) whose items all satisfy ``item``."""

    item: Integer | Real | Options

    def accepts(self, value) -> bool:
        return (
            isinstance(value, list | tuple)
            and len(value) > 0
            and all(self.item.accepts(v) for v in value)
        )

    def describe(self) -> str:
        return f"a non-empty list, each {self.item.describe()}"


@dataclass(frozen=True)
class Mapping:
    """A dictionary with string keys (e.g. keyword arguments)."""

    def accepts(self, value) -> bool:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)

    def describe(self) -> str:
        return "a dictionary"


def check_parameters(backend: str, params: dict, constraints: dict) -> None:
    """Raise InputError for the first parameter ``constraints`` do not allow.

    Parameters
    ----------
    backend : str
        Backend name, the start of the message.
    params : dict
        Parameter name -> value.
    constraints : dict
        Parameter name -> list of constraint objects or None (null allowed).
        A name missing here is an unknown parameter.
    """
    for key in params:
        if key not in constraints:
            known = ", ".join(sorted(constraints)) or "none"
            raise InputError(f"{backend}: unknown parameter {key!r} (known: {known})")
    for key, value in params.items():
        allowed = constraints[key]
        if value is None and None in allowed:
            continue
        kinds = [c for c in allowed if c is not None]
        if any(c.accepts(value) for c in kinds):
            continue
        wanted = " or ".join(c.describe() for c in kinds)
        if None in allowed:
            wanted += " or null"
        raise InputError(f"{backend}: parameter {key} must be {wanted}, got {value!r}")


#: A whole number >= 1: counts of clusters, frames, components.
POSITIVE_INTEGER = Integer(1)


def check_choice(name: str, value, choices) -> None:
    """One line unless ``value`` is one of ``choices`` (:class:`Options`):
    ``unknown descriptor 'soap'; choose one of distances, inverse``."""
    if not Options(tuple(choices)).accepts(value):
        raise InputError(
            f"unknown {name} {value!r}; choose one of {', '.join(choices)}"
        )


def check_positive_int(name: str, value) -> None:
    """One line unless ``value`` is an integer >= 1 (not a bool):
    ``n_geometry must be a positive integer, got 0``."""
    if not POSITIVE_INTEGER.accepts(value):
        raise InputError(f"{name} must be a positive integer, got {value!r}")
