"""ase-flatten: flatten the error of machine-learning force fields.

Cluster an MD dataset by geometry and energy, measure a model's errors per cluster
(outlier detection), and build training sets that flatten those errors.

The public API is imported lazily, so ``import ase_flatten`` and the command line
start fast::

    from ase_flatten import read_dataset, cluster_dataset, cluster_errors

The workflows of the command lines are functions too: :func:`train_model`
(``ase-flatten train``), :func:`error_report` (``errors``),
:func:`compare_models` (``compare``), :func:`run_selection` (``select``) and
:func:`validate_models` (``md-validate``).
"""

import importlib

__version__ = "0.1.0"

_API = {
    "Dataset": "data",
    "read_dataset": "data",
    "pairwise_distances": "descriptors",
    "TwoStageClustering": "clustering",
    "cluster_dataset": "clustering",
    "cluster_features": "clustering",
    "ClusterErrors": "error_analysis",
    "cluster_errors": "error_analysis",
    "predict_with_calculator": "error_analysis",
    "read_predictions": "error_analysis",
    "InputError": "exceptions",
    "FlattenedCalculator": "calculator",
    "SavedModel": "models",
    "load_model": "models",
    "save_model": "models",
    "make_backend": "backends",
    "train_model": "training",
    "TrainSettings": "training",
    "error_report": "reports",
    "ReportSettings": "reports",
    "compare_models": "comparison",
    "CompareSettings": "comparison",
    "run_selection": "selection.flatten",
    "SelectionConfig": "selection.flatten",
    "validate_models": "validation",
}
__all__ = ["__version__", *_API]


def _register_calculator() -> None:
    """Make ``ase.calculators.calculator.get_calculator_class("flattened")`` work."""
    try:
        from ase.calculators import calculator

        if "flattened" not in calculator.external_calculators:
            from .calculator import FlattenedCalculator

            calculator.register_calculator_class("flattened", FlattenedCalculator)
    except Exception:  # noqa: BLE001 - registration must never break the import
        pass


_register_calculator()


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
