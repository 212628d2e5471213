"""A whole validation: models x temperatures x replicas, then the reports."""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms

from ase_flatten.exceptions import RunError, naming_flags, option

from .metrics import run_metrics
from .replicas import ModelSpec, Task, is_finished, run_tasks
from .report import plot_energy_vs_time, write_summary
from .result import RunResult
from .settings import DEFAULT_REPLICAS, RunSettings

logger = logging.getLogger(__name__)

__all__ = ["Protocol", "validate_models"]

#: Name of the reference method's runs in every output.
REFERENCE = "reference"
#: Reference replica ``k`` uses seed ``seed + REFERENCE_SEED_OFFSET + k``: its runs
#: are independent of the models' (which share seeds), so a model's distance to
#: the reference and the reference's distance to itself compare like with like.
REFERENCE_SEED_OFFSET = 1_000_000


@dataclass
class Protocol:
    """What every run does.

    Parameters
    ----------
    temperatures : list of float
        Thermostat targets (K).
    n_steps : int
        MD steps per model run.
    replicas : int
        Seeded replicas per model and temperature (replica ``k`` uses seed
        ``seed + k`` for every model); default
        :data:`~md_validation.settings.DEFAULT_REPLICAS`.
    seed : int
    reference_replicas : int, optional
        Replicas of the reference method (default ``min(replicas, 4)``); its
        replica ``k`` uses seed ``seed + REFERENCE_SEED_OFFSET + k``.
    reference_n_steps : int, optional
        Steps of a reference run (default ``n_steps``).
    run : RunSettings
        What every run shares (engine, thermostat, timestep_fs, stride, tau_fs,
        criteria); each run takes its temperature, ``n_steps`` and seed from
        the protocol.
    log_every_ps : float
        Every replica logs where it is every this many simulated ps (0: never);
        not a setting of the runs (a resumed run may change it).
    reference : ModelSpec, optional
        The reference method (a calculator factory), run under the name
        ``reference`` with the same protocol.
    reference_energy : float
        Zero of energy: the reference data's lowest potential energy (eV).
    high_error_factor : float
        A cluster is high-error when its force RMSE exceeds this times the
        model's overall one (:meth:`~ase_flatten.models.SavedModel.locate`).
    """

    temperatures: list = field(default_factory=lambda: [300.0, 400.0])
    n_steps: int = 2000
    replicas: int = DEFAULT_REPLICAS
    seed: int = 0
    reference_replicas: int | None = None
    reference_n_steps: int | None = None
    run: RunSettings = field(default_factory=RunSettings)
    log_every_ps: float = 0.0
    reference: ModelSpec | None = None
    reference_energy: float = 0.0
    #: ase_flatten.models.HIGH_ERROR_FACTOR (not imported: ``md-validate --help``
    #: stays light)
    high_error_factor: float = 1.1


def _spec(name, model) -> tuple[ModelSpec, object]:
    """The worker's spec of ``model`` and the loaded model for metrics (or None)."""
    from ase_flatten.models import SavedModel, load_model

    if isinstance(model, ModelSpec):
        saved = load_model(model.path) if model.path is not None else None
        return model, saved
    if isinstance(model, SavedModel) and model.path is not None:
        return ModelSpec(name, path=str(model.path)), model
    if isinstance(model, (str, Path)):
        return ModelSpec(name, path=str(model)), load_model(model)
    raise TypeError(
        f"model {name!r}: give a model directory or a ModelSpec (runs happen in "
        "worker processes); use md_validation.run_md for a calculator object"
    )


def _tasks(specs, atoms, outdir, protocol, reference) -> list[Task]:
    """Every run of the validation, models first, then the reference."""
    groups = [(spec, protocol.replicas, protocol.n_steps, 0) for spec in specs]
    if reference is not None:
        replicas = protocol.reference_replicas or min(protocol.replicas, 4)
        steps = protocol.reference_n_steps or protocol.n_steps
        groups.append((reference, replicas, steps, REFERENCE_SEED_OFFSET))
    tasks = []
    for spec, replicas, steps, offset in groups:
        for temperature in protocol.temperatures:
            for k in range(replicas):
                settings = dataclasses.replace(
                    protocol.run,
                    temperature_K=float(temperature),
                    n_steps=steps,
                    seed=protocol.seed + offset + k,
                )
                tasks.append(
                    Task(
                        spec=spec,
                        replica=k,
                        run_dir=str(
                            outdir / spec.name / f"{temperature:g}K" / f"replica{k}"
                        ),
                        atoms=atoms,
                        settings=settings,
                        log_every_ps=protocol.log_every_ps,
                    )
                )
    return tasks


def _rerun() -> str:
    """How to finish the runs that did not: resume (command line) or call again."""
    if naming_flags():
        return f"rerun with {option('resume')}"
    return "call validate_models again with the same outdir to finish them"


def validate_models(
    models: dict,
    atoms: Atoms,
    outdir: str | Path,
    protocol: Protocol | None = None,
    *,
    jobs: int = 1,
    progress: bool = False,
    client=None,
    **fields,
) -> tuple[list[dict], list[str]]:
    """Run every model (and the reference) at every temperature and replica.

    Runs already finished in ``outdir`` (their ``run.json`` exists) are kept;
    unfinished run folders are redone.

    Parameters
    ----------
    models : dict
        Name -> model directory, :class:`~ase_flatten.models.SavedModel` loaded
        from one, or :class:`~md_validation.replicas.ModelSpec`.
    atoms : Atoms
        Starting frame.
    outdir : path
        Gets ``<model>/<T>K/replica<k>/`` per run, ``summary.csv``,
        ``energy_vs_time.png``.
    protocol : Protocol, optional
        What every run does, the reference method and the analysis settings.
    jobs : int
        Worker processes.
    progress : bool
        A progress bar over runs.
    client : distributed.Client, optional
        Run the replicas as Dask tasks on its workers (``--dask``).
    **fields
        Fields of :class:`Protocol` (replacing those of ``protocol``), e.g.
        ``temperatures=[300.0], n_steps=2000, reference=ModelSpec(...)``.

    Returns
    -------
    rows : list of dict
        One per run, the columns of ``summary.csv``.
    verdict : list of str
        Lines to print.
    """
    protocol = dataclasses.replace(protocol or Protocol(), **fields)
    reference = protocol.reference
    reference_energy = protocol.reference_energy
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    loaded = [_spec(name, model) for name, model in models.items()]
    specs = [spec for spec, _ in loaded]
    saved = {spec.name: model for spec, model in loaded}
    if reference is not None:
        reference = ModelSpec(
            REFERENCE, factory=reference.factory, kwargs=reference.kwargs
        )
    tasks = _tasks(specs, atoms, outdir, protocol, reference)
    todo = [task for task in tasks if not is_finished(task.run_dir)]
    if len(todo) < len(tasks):
        logger.info("keeping %d finished runs", len(tasks) - len(todo))
    errors = run_tasks(todo, jobs=jobs, progress=progress, client=client)
    if errors:  # a run that raised or a worker that died: not the input's fault
        raise RunError(
            f"{len(errors)} of {len(todo)} runs did not finish (first: {errors[0]}); "
            f"the finished ones are kept in {outdir}: {_rerun()}"
        )
    rows, runs = _collect(tasks, outdir, saved, protocol)
    write_summary(rows, outdir / "summary.csv")
    plot_energy_vs_time(
        [
            dict(model=r["model"], temperature_K=r["temperature_K"],
                 record=r["result"].record, failed=r["result"].failed)
            for r in runs
        ],
        outdir / "energy_vs_time.png",
        reference_energy,
    )  # fmt: skip
    comparison, lines = _survival_reports(rows, tasks, protocol, outdir)
    if reference is not None:
        lines += _reference_reports(
            runs, protocol, comparison, outdir, reference_energy
        )
    from ase_flatten.files import write_json

    write_json(outdir / "comparison.json", _json_safe(comparison))
    return rows, lines


def _collect(tasks, outdir, saved, protocol) -> tuple[list[dict], list[dict]]:
    """Every finished run's ``summary.csv`` row (its metrics, with the model's
    error map when ``saved`` has it) and its result, in task order."""
    rows, runs = [], []
    for task in tasks:
        result = RunResult.load(task.run_dir)
        name = task.spec.name
        row = dict(
            model=name,
            temperature_K=task.temperature_K,
            replica=task.replica,
            seed=task.settings.seed,
            engine=result.meta.get("engine"),
            thermostat=result.meta.get("thermostat"),
            run_dir=str(Path(task.run_dir).relative_to(outdir)),
        )
        row.update(
            run_metrics(
                result,
                protocol.reference_energy,
                saved.get(name),
                protocol.high_error_factor,
            )
        )
        rows.append(row)
        runs.append(dict(model=name, temperature_K=task.temperature_K, result=result))
    return rows, runs


def _json_safe(value):
    """NaN and inf become None (strict JSON)."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _reference_reports(runs, protocol, comparison, outdir, reference_energy):
    """reference.png and the "reference" entries of comparison.json; lines."""
    from .reference import compare_to_reference, plot_reference, reference_lines

    criteria = protocol.run.criteria
    table, histograms = compare_to_reference(
        runs, REFERENCE, reference_energy, criteria.temperature_window_fs
    )
    plot_reference(histograms, outdir / "reference.png", REFERENCE)
    for temperature, entry in table.items():
        comparison["temperatures"][temperature]["reference"] = entry
    return reference_lines(table)


def _survival_reports(rows, tasks, protocol, outdir) -> tuple[dict, list[str]]:
    """survival.csv, survival.png; the comparison dict and the verdict lines."""
    from .survival import (
        ALPHA,
        logrank_pairs,
        plot_survival,
        risky_share,
        share_text,
        summarize_groups,
        survival_table,
        verdict_line,
        write_survival,
    )

    run_lengths = {t.spec.name: t.settings.time_ps(t.settings.n_steps) for t in tasks}
    table = survival_table(rows)
    write_survival(table, outdir / "survival.csv")
    groups = summarize_groups(table, run_lengths)
    plot_survival(groups, outdir / "survival.png")
    models = [name for name in run_lengths if name != REFERENCE]
    pairs = logrank_pairs(table, models)
    shares = {
        (g.model, g.temperature_K): risky_share(rows, g.model, g.temperature_K)
        for g in groups
    }
    for pair in pairs:
        pair["risky_share"] = [shares[m, pair["temperature_K"]] for m in pair["models"]]
        pair["verdict"] = verdict_line(pair)
    comparison = dict(
        significance_level=ALPHA,
        test="log-rank (lifelines.statistics.logrank_test)",
        failures_per_ns_ci="exact Poisson 95 % interval",
        temperatures={},
    )
    for temperature in protocol.temperatures:
        at_t = dict(
            models={
                g.model: dict(g.to_json(), risky_share=shares[g.model, g.temperature_K])
                for g in groups
                if g.temperature_K == float(temperature)
            },
            pairs=[p for p in pairs if p["temperature_K"] == float(temperature)],
        )
        comparison["temperatures"][f"{temperature:g}"] = at_t
    lines = []
    for temperature in sorted(float(t) for t in protocol.temperatures):
        lines += [p["verdict"] for p in pairs if p["temperature_K"] == temperature]
        for g in groups:
            if g.temperature_K != temperature:
                continue
            line = (
                f"{g.temperature_K:g} K: {g.model}: {g.failures}/{g.replicas} failed, "
                f"median time to failure {g.median_text()}, "
                f"{g.rate_per_ns:.3g} failures/ns "
                f"(95 % CI {g.rate_ci[0]:.3g}-{g.rate_ci[1]:.3g})"
            )
            share = shares[g.model, g.temperature_K]
            if share is not None:
                line += (
                    f", risky MD frames {share_text(share)} (outside the domain "
                    f"{100 * share['outside_domain']:.0f} %, in high-error clusters "
                    f"{100 * share['high_error']:.0f} %)"
                )
            lines.append(line)
    return comparison, lines
