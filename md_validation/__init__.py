"""md_validation: NVT stability runs of machine-learning force fields (ASE, i-PI).

::

    from md_validation import run_md
    result = run_md("models/flat", atoms, temperature_K=400, n_steps=10_000,
                    engine="ipi", outdir="runs/flat_400K")
    result.failed, result.failure_time_ps, result.record["total_eV"]
"""

from .failure import FailureCriteria, MDFailure, check_frame, check_structure
from .metrics import run_metrics
from .replicas import ModelSpec
from .result import COLUMNS, RunResult
from .single_run import calculator_factory, run_md
from .workflow import Protocol, validate_models

__all__ = [
    "COLUMNS",
    "FailureCriteria",
    "MDFailure",
    "ModelSpec",
    "Protocol",
    "RunResult",
    "calculator_factory",
    "check_frame",
    "check_structure",
    "run_md",
    "run_metrics",
    "validate_models",
]
