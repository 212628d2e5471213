"""A whole validation: models x temperatures x replicas, then summary and figure."""

from __future__ import annotations

import logging
from pathlib import Path

from ase import Atoms

from .failure import FailureCriteria
from .metrics import run_metrics
from .report import plot_energy_vs_time, verdicts, write_summary
from .runner import calculator_factory, run_md

logger = logging.getLogger(__name__)

__all__ = ["validate_models"]


def validate_models(
    models: dict,
    atoms: Atoms,
    outdir: str | Path,
    temperatures=(300.0, 400.0),
    n_steps: int = 2000,
    replicas: int = 1,
    seed: int = 0,
    reference_energy: float = 0.0,
    high_error_factor: float = 1.1,
    **run_kwargs,
) -> tuple[list[dict], list[str]]:
    """Run every model at every temperature in ``replicas`` seeded replicas.

    Parameters
    ----------
    models : dict
        Name -> model directory, :class:`~ase_flatten.models.SavedModel`,
        calculator or calculator factory.
    atoms : Atoms
        Starting frame.
    outdir : path
        Gets ``<model>/<T>K/replica<k>/`` per run, ``summary.csv`` and
        ``energy_vs_time.png``.
    temperatures : sequence of float
    n_steps : int
    replicas : int
    seed : int
        Replica ``k`` uses seed ``seed + k`` (the same seeds for every model).
    reference_energy : float
        Zero of energy: the reference data's lowest potential energy (eV).
    high_error_factor : float
        See :func:`md_validation.metrics.domain_fractions`.
    **run_kwargs
        Passed to :func:`md_validation.runner.run_md` (engine, thermostat,
        timestep_fs, stride, tau_fs, criteria, progress).

    Returns
    -------
    rows : list of dict
        One per run, the columns of ``summary.csv``.
    verdict : list of str
        One line per temperature.
    """
    from ase_flatten.models import SavedModel, load_model

    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    run_kwargs.setdefault("criteria", FailureCriteria())
    rows, runs = [], []
    for name, model in models.items():
        if isinstance(model, (str, Path)):
            model = load_model(model)
        saved = model if isinstance(model, SavedModel) else None
        factory = calculator_factory(model)
        for temperature in temperatures:
            for k in range(replicas):
                run_dir = outdir / name / f"{temperature:g}K" / f"replica{k}"
                result = run_md(
                    factory,
                    atoms,
                    temperature_K=float(temperature),
                    n_steps=n_steps,
                    seed=seed + k,
                    outdir=run_dir,
                    label=f"{name} {temperature:g} K #{k}",
                    **run_kwargs,
                )
                row = dict(
                    model=name,
                    temperature_K=float(temperature),
                    replica=k,
                    seed=seed + k,
                    engine=result.meta["engine"],
                    thermostat=result.meta["thermostat"],
                    run_dir=str(run_dir.relative_to(outdir)),
                )
                row.update(
                    run_metrics(result, reference_energy, saved, high_error_factor)
                )
                rows.append(row)
                runs.append(
                    dict(
                        model=name,
                        temperature_K=float(temperature),
                        record=result.record,
                        failed=result.failed,
                    )
                )
    write_summary(rows, outdir / "summary.csv")
    plot_energy_vs_time(runs, outdir / "energy_vs_time.png", reference_energy)
    lines = verdicts(rows)
    for line in lines:
        logger.debug(line)
    return rows, lines
