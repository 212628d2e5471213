"""MD stability of trained models: ``md-validate`` in Python.

The workflow lives in :mod:`md_validation` (installed with ase-flatten); this
module makes it importable beside the other workflows::

    from ase_flatten import validate_models

    rows, verdict = validate_models(
        {"default": "models/default", "flattened": "models/flat"},
        start_atoms, "md/", temperatures=[300.0, 400.0], n_steps=2000, replicas=8,
    )

See :func:`md_validation.workflow.validate_models` and
:class:`md_validation.workflow.Protocol`.
"""

from md_validation.workflow import Protocol, validate_models

__all__ = ["Protocol", "validate_models"]
