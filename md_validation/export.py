"""Hand-off to labelling: the MD frames a model should be trained on next.

For every model, the frames of its finished runs that fall outside the data's
applicability domain or in one of its high-error clusters
(:meth:`ase_flatten.models.SavedModel.locate`) are thinned by farthest-point
sampling on the pairwise-distance descriptor (scikit-matter's FPS, as the ``fps``
training-set strategy) to at most ``max_frames``, and written as
``DIR/<model>.extxyz``: positions only (no energies or forces: the model's are not
labels), with ``model``, ``time_ps``, ``step``, ``temperature_K``, ``replica``,
``cluster``, ``reason`` and ``domain_distance`` in each frame's ``info``, in the
order FPS chose them (label the first ones first). ``DIR/export.json`` counts, per
model, the frames read, flagged and written.

``DIR`` is an output folder like any other (:mod:`ase_flatten.files`): built
beside its place and swapped in whole, marked as ``md-validate --export-risky``;
an existing folder is replaced only with ``overwrite`` and only when it is an
earlier export, never when it holds an input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "EXPORT_COMMAND",
    "ExportSettings",
    "RunTrajectory",
    "check_export_available",
    "export_risky_frames",
    "runs_from_rows",
]

#: The command an export folder's marker names.
EXPORT_COMMAND = "md-validate --export-risky"


@dataclass
class ExportSettings:
    """How risky frames are chosen.

    Attributes
    ----------
    max_frames : int
        At most this many frames per model.
    high_error_factor : float
        A cluster is high-error above this times the model's overall force RMSE.
    seed : int
        Seeds the first FPS frame.
    """

    max_frames: int = 50
    high_error_factor: float = 1.1
    seed: int = 0


@dataclass
class RunTrajectory:
    """One finished run: which model, temperature and replica, and its frames."""

    model: str
    temperature_K: float
    replica: int
    path: Path  #: the run's trajectory.extxyz


def runs_from_rows(rows: list[dict], outdir: str | Path) -> list[RunTrajectory]:
    """The runs of :func:`md_validation.workflow.validate_models`' summary rows."""
    return [
        RunTrajectory(
            model=row["model"],
            temperature_K=float(row["temperature_K"]),
            replica=int(row["replica"]),
            path=Path(outdir) / row["run_dir"] / "trajectory.extxyz",
        )
        for row in rows
    ]


def check_export_available(
    directory: str | Path, overwrite: bool = False, inputs=()
) -> None:
    """Raise the one-line error before any MD: FPS missing, or ``directory`` taken.

    ``directory`` must be a folder that :func:`export_risky_frames` may write:
    missing or empty, or an earlier export with ``overwrite``; not a file, not an
    input of the run (``inputs``) nor a folder holding one.
    """
    from ase_flatten.exceptions import InputError
    from ase_flatten.files import check_output_directory

    check_output_directory(directory, EXPORT_COMMAND, overwrite, inputs)
    try:
        import skmatter  # noqa: F401
    except ImportError as exc:
        raise InputError(
            "--export-risky needs skmatter (farthest-point sampling): pip install "
            "'ase-flatten[baselines]'"
        ) from exc


def export_risky_frames(
    runs: list[RunTrajectory],
    models: dict,
    directory: str | Path,
    settings: ExportSettings | None = None,
    overwrite: bool = False,
    inputs=(),
) -> dict[str, dict]:
    """Write each model's risky MD frames, thinned by FPS, as extxyz.

    Parameters
    ----------
    runs : list of RunTrajectory
        Finished runs (failed ones included: their frames up to the failure).
    models : dict
        Model name -> :class:`~ase_flatten.models.SavedModel` or model directory.
        Models without a cluster model are skipped (nothing to classify with).
    directory : path
        The output folder: gets ``<model>.extxyz`` per model and
        ``export.json``, all at once when complete.
    settings : ExportSettings, optional
    overwrite : bool
        Replace an earlier export in ``directory``.
    inputs : iterable of path
        The run's inputs (dataset, models): ``directory`` must not be or hold one.

    Returns
    -------
    dict
        Per model: ``frames`` (read), ``outside_domain``, ``high_error``,
        ``risky`` (either) and ``written``, and ``path`` of its file (None
        when no frame was risky: no file is written).

    Raises
    ------
    InputError
        ``directory`` cannot be written or replaced (before any work).
    """
    from ase_flatten.files import atomic_directory, write_json
    from ase_flatten.models import load_model

    settings = settings or ExportSettings()
    directory = Path(directory)
    summary = {}
    with atomic_directory(directory, EXPORT_COMMAND, overwrite, inputs) as staging:
        for name, saved in models.items():
            if isinstance(saved, (str, Path)):
                saved = load_model(saved)
            if saved.clusters is None:
                logger.warning(
                    "%s: saved without clusters; no risky frames to export", name
                )
                continue
            mine = [run for run in runs if run.model == name]
            summary[name] = _export_model(
                name, saved, mine, staging, directory, settings
            )
        write_json(staging / "export.json", summary)
    return summary


def _export_model(name, saved, runs, staging, directory, settings) -> dict:
    from ase_flatten.selection.baselines import farthest_point_frames

    frames = [frame for run in runs for frame in _read_frames(run)]
    path = directory / f"{name}.extxyz"  # where it will be, once swapped in
    counts = dict(frames=len(frames), outside_domain=0, high_error=0, risky=0)
    if frames:
        positions = np.array([f.positions for f in frames])
        energies = np.array([f.info["model_energy_eV"] for f in frames])
        where = saved.locate(positions, energies, settings.high_error_factor)
        risky = np.flatnonzero(where.risky)
        counts.update(
            outside_domain=int(where.outside_domain.sum()),
            high_error=int(where.high_error.sum()),
            risky=len(risky),
        )
        chosen = risky[
            farthest_point_frames(positions[risky], settings.max_frames, settings.seed)
        ]
        frames = [_annotate(frames[i], where, i) for i in chosen]
    if frames:
        _write_frames(staging / path.name, frames)
    logger.info(
        "%s: %d of %d MD frames risky (%d outside the domain, %d in high-error "
        "clusters); %d written to %s",
        name,
        counts["risky"],
        counts["frames"],
        counts["outside_domain"],
        counts["high_error"],
        len(frames),
        path,
    )
    return {**counts, "written": len(frames), "path": str(path) if frames else None}


def _read_frames(run: RunTrajectory) -> list:
    """Finite frames of a run, labelled with their run; [] without a trajectory."""
    import ase.io

    if not run.path.exists():
        logger.warning("%s: no trajectory; skipped", run.path)
        return []
    frames = []
    for atoms in ase.io.read(run.path, ":", format="extxyz"):
        energy = (
            atoms.get_potential_energy() if atoms.calc is not None else float("nan")
        )
        if not (np.isfinite(energy) and np.isfinite(atoms.positions).all()):
            continue
        atoms.calc = None
        atoms.info.update(
            model=run.model,
            temperature_K=run.temperature_K,
            replica=run.replica,
            model_energy_eV=float(energy),
        )
        frames.append(atoms)
    return frames


def _annotate(atoms, where, i: int):
    """Frame ``i``'s cluster, distance and why it is risky (``where``: a Location)."""
    outside, high = bool(where.outside_domain[i]), bool(where.high_error[i])
    reasons = [r for r, f in (("outside_domain", outside), ("high_error", high)) if f]
    atoms.info.update(
        cluster=int(where.cluster[i]),
        reason="+".join(reasons),
        domain_distance=float(where.domain_distance[i]),
    )
    return atoms


def _write_frames(path: Path, frames: list) -> None:
    import ase.io

    from ase_flatten.files import atomic_path

    with atomic_path(path) as tmp:
        ase.io.write(tmp, frames, format="extxyz")
