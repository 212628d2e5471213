"""ase-flatten: flatten the error of machine-learning force fields.

Cluster an MD dataset by geometry and energy, measure a model's errors per cluster
(outlier detection), and build training sets that flatten those errors.

The public API is imported lazily, so ``import ase_flatten`` and the command line
start fast::

    from ase_flatten import read_dataset, cluster_dataset, cluster_errors
"""

import importlib

__version__ = "0.1.0"

_API = {
    "Dataset": "data",
    "read_dataset": "data",
    "pairwise_distances": "descriptors",
    "TwoStageClustering": "clustering",
    "cluster_dataset": "clustering",
    "ClusterErrors": "errors",
    "cluster_errors": "errors",
    "predict_with_calculator": "errors",
    "read_predictions": "errors",
    "InputError": "exceptions",
}
__all__ = ["__version__", *_API]


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
