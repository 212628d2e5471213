"""The parameter vocabulary for backends and backend plugins.

Defined in :mod:`ase_flatten.parameters`, which the clustering and the selection
loop share; backends declare their ``parameter_constraints`` with it.
"""

from ..parameters import (
    Boolean,
    Integer,
    ListOf,
    Mapping,
    Options,
    Pattern,
    Real,
    check_parameters,
)

__all__ = [
    "Boolean",
    "Integer",
    "ListOf",
    "Mapping",
    "Options",
    "Pattern",
    "Real",
    "check_parameters",
]
