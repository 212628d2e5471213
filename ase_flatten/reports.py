"""A model's errors per cluster, written as a report: ``ase-flatten errors`` in Python.

::

    from ase_flatten.reports import error_report

    report = error_report("traj.xyz", "report/", model="models/default")
    report.summary["max_ratio"], report.errors.worst(5)

Compares predicted energies and forces with the reference labels of the data,
frame by frame, and reports them per cluster: ``cluster_errors.csv`` (one row
per cluster, sorted by force RMSE), ``frame_errors.csv``, ``summary.json`` and
``cluster_errors.png`` (the paper's Fig. 2), in eV and eV/Å with kcal/mol
columns beside them. The summary holds the frames of the worst cluster, the
99th percentile and the maximum of the per-atom force-error norms and a
bootstrap 95 % interval over the frames for each (1000 resamples, seed 0).

The predictions come from exactly one of: a file of the same frames
(``predicted``), a saved model (``model``; the frames it trained or validated
on are left out unless ``include_train``) or an ASE calculator factory
(``calculator``). With a model or a calculator, ``extra_test`` measures a
labelled trajectory of the same molecule that shares no frame with the data or
the model's training data too.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .clustering_options import ClusteringSettings
from .exceptions import InputError, option
from .training import settings_of

logger = logging.getLogger(__name__)

__all__ = ["ErrorReport", "ReportSettings", "error_report"]

#: Recorded in the report folder's output marker (replaced only by its like).
COMMAND = "ase-flatten errors"
#: The statistics of an extra test set in ``summary.json`` (one cluster).
_EXTRA_STATISTICS = ("force_rmse", "energy_rmse", "atom_error_p99", "atom_error_max")


@dataclass(frozen=True)
class ReportSettings:
    """What :func:`error_report` measures and writes.

    Parameters
    ----------
    predicted : path, optional
        A trajectory of the same frames with the model's energies and forces.
    model : path, optional
        A model directory (:mod:`ase_flatten.models`) that predicts the frames.
    calculator : str, optional
        An ASE calculator factory, ``"module:callable"`` (e.g.
        ``"tblite.ase:TBLite"``), that predicts the frames.
    calc_kwargs : dict
        Keyword arguments of ``calculator``.
    pred_energy_key, pred_forces_key : str, optional
        Where ``predicted`` keeps its energies (``atoms.info``) and forces
        (``atoms.arrays``), e.g. ``MACE_energy`` / ``MACE_forces``.
    clusters : path, optional
        A saved clustering (``ase-flatten cluster``'s file, or a model's
        ``clusters.npz``); frames it was not made from are assigned to its
        clusters. None: the data are clustered here with ``clustering``.
    clustering : ClusteringSettings
    seed : int
        Seed of the clustering.
    write_worst : int, optional
        Write the frames of this many worst clusters to
        ``worst_clusters.extxyz``.
    align_energies : bool
        Remove the mean energy difference first (a model with another zero).
    include_train : bool
        With ``model``: evaluate the frames it trained or validated on too
        (matched by content; left out by default).
    extra_test : path, optional
        With ``model`` or ``calculator``: a labelled trajectory of the same
        molecule, read with the data's label keys, that holds no frame of the
        data or of the model's training data (e.g. hotter MD).
    """

    predicted: str | os.PathLike | None = None
    model: str | os.PathLike | None = None
    calculator: str | None = None
    calc_kwargs: dict = field(default_factory=dict)
    pred_energy_key: str | None = None
    pred_forces_key: str | None = None
    clusters: str | os.PathLike | None = None
    clustering: ClusteringSettings = field(default_factory=ClusteringSettings)
    seed: int = 0
    write_worst: int | None = None
    align_energies: bool = False
    include_train: bool = False
    extra_test: str | os.PathLike | None = None

    def check(self) -> None:
        """One source of predictions, and the settings that go with it."""
        sources = [self.predicted, self.model, self.calculator]
        if sum(source is not None for source in sources) != 1:
            raise InputError(
                f"give exactly one of {option('predicted')}, {option('model')} and "
                f"{option('calculator')}"
            )
        if self.extra_test is not None and self.predicted is not None:
            raise InputError(
                f"{option('extra_test')} needs a model to predict its frames: give "
                f"{option('model', 'DIR')} or {option('calculator')}, not "
                f"{option('predicted')}"
            )
        if not isinstance(self.calc_kwargs, dict):
            raise InputError(
                f"{option('calc_kwargs')} must be a dict of keyword arguments, got "
                f"{self.calc_kwargs!r}"
            )

    @property
    def source(self) -> str:
        """What predicts, as ``summary.json`` records it."""
        return str(self.predicted or self.model or self.calculator)


@dataclass
class ErrorReport:
    """What :func:`error_report` measured and where it wrote it.

    Attributes
    ----------
    errors : ClusterErrors
        Per-frame and per-cluster errors of the frames evaluated.
    extra_errors : ClusterErrors or None
        Errors on the ``extra_test`` frames (one cluster).
    left_out : dict or None
        With ``model``: ``count`` frames left out (it trained or validated on
        them) and the ``rule`` that found them.
    directory : Path
        The report folder.
    """

    errors: object
    extra_errors: object | None
    left_out: dict | None
    directory: Path

    @property
    def summary(self) -> dict:
        """Overall and extreme values (:meth:`ClusterErrors.summary`)."""
        return self.errors.summary()


def error_report(
    data,
    output,
    settings: ReportSettings | None = None,
    *,
    overwrite: bool = False,
    workers=None,
    **fields,
) -> ErrorReport:
    """Measure a model's errors per cluster on ``data`` and write the report.

    Parameters
    ----------
    data : Dataset, path or DataFile
        The labelled frames. A path, or a :class:`~ase_flatten.data.DataFile`
        without label keys, is read with the keys ``model`` recorded, if any.
    output : path
        The report folder. An existing non-empty folder is replaced only with
        ``overwrite``, and only when it is an earlier report.
    settings : ReportSettings, optional
    overwrite : bool
    workers : ase_flatten.dask_workers.WorkerPool, optional
        With ``model``: predict on these Dask workers (the same numbers).
    **fields
        Fields of :class:`ReportSettings` (replacing those of ``settings``),
        e.g. ``model="models/default"``.

    Returns
    -------
    ErrorReport

    Raises
    ------
    InputError
        Bad data, settings, model, calculator or output, before any prediction.
    """
    from .data import data_path, load_data
    from .files import atomic_directory, check_output_directory

    settings = settings_of(ReportSettings, settings, fields)
    data = _with_model_keys(data, settings.model)
    inputs = [data_path(data), settings.predicted, settings.model, settings.clusters,
              settings.extra_test]  # fmt: skip
    check_output_directory(output, COMMAND, overwrite, inputs)
    settings.check()
    if workers is not None and settings.model is None:
        raise InputError(
            f"Dask workers predict with a saved model: give {option('model', 'DIR')}"
        )
    dataset = load_data(data)
    # a bad model or calculator fails now
    predict, left_out, backend = _prediction_source(settings, dataset, workers)
    extra = _read_extra_test(settings, dataset)
    labels, assigned = _saved_labels(settings, dataset)
    with atomic_directory(output, COMMAND, overwrite, inputs) as tmp:
        errors, extra_errors = _write_report(
            settings,
            dataset,
            predict,
            (labels, assigned),
            left_out,
            tmp,
            backend,
            extra,
        )
    return ErrorReport(errors, extra_errors, left_out, Path(output))


def _with_model_keys(data, model):
    """``data`` as a DataFile read with the label keys ``model`` recorded, unless
    given (a Dataset stays as it is)."""
    from .data import DataFile, Dataset, as_data_file
    from .models import recorded_label_keys

    data = as_data_file(data)
    if isinstance(data, Dataset) or model is None:
        return data
    try:
        meta = json.loads((Path(model) / "model.json").read_text())
    except (OSError, ValueError):
        return data  # loading the model says what is wrong, in its own words
    if not isinstance(meta, dict):
        return data
    energy_key, forces_key = recorded_label_keys(meta)
    return DataFile(
        data.path,
        index=data.index,
        format=data.format,
        energy_key=data.energy_key or energy_key,
        forces_key=data.forces_key or forces_key,
    )


def _saved_labels(settings, dataset):
    """The labels of the data's frames from ``clusters``, and whether they were
    assigned (frames it was not made from); (None, False) without one."""
    if settings.clusters is not None:
        from .clustering import labels_for, load_clusters

        model, arrays = load_clusters(settings.clusters)
        return labels_for(model, arrays, dataset, settings.clusters)
    if settings.model is not None:
        saved = os.path.join(settings.model, "clusters.npz")
        if os.path.exists(saved):
            logger.info(
                "clustering %s afresh; %s labels its frames with the model's "
                "clusters instead (the numbers predict and the calculator report)",
                dataset.source,
                option("clusters", saved),
            )
    return None, False


def _read_extra_test(settings, dataset):
    """The ``extra_test`` frames, checked against the data and the model's
    training data (None without them)."""
    from .error_analysis import read_extra_test

    if settings.extra_test is None:
        return None
    models = []
    if settings.model is not None:
        from .models import load_model

        models.append((settings.model, load_model(settings.model)))
    return read_extra_test(
        settings.extra_test,
        dataset,
        models,
        energy_key=dataset.energy_key,
        forces_key=dataset.forces_key,
    )


def _write_report(
    settings, dataset, predict, labels, left_out, directory, backend, extra
):
    """Cluster (unless ``labels`` holds saved ones), predict, and write every
    report file; the errors and the extra test set's errors."""
    from .clustering import save_clusters
    from .error_analysis import BOOTSTRAP_RESAMPLES, cluster_errors, extra_test_errors
    from .plots import plot_cluster_errors

    labels, assigned = labels
    if labels is None:
        model = settings.clustering.fit(dataset, settings.seed)
        labels = model.labels_
        save_clusters(
            os.path.join(directory, "clusters.npz"),
            model,
            **settings.clustering.record(dataset, settings.seed),
        )
    frames, energies, forces = predict()
    errors = cluster_errors(
        dataset.subset(frames),
        energies,
        forces,
        labels[frames],
        align_energies=settings.align_energies,
        frames=frames,
    )
    extra_errors = extra_meta = None
    if extra is not None:
        extra_errors = extra_test_errors(backend, extra)
        extra_meta = {
            "path": str(settings.extra_test),
            "n_frames": len(extra),
            "fingerprint": extra.fingerprint(),
            **interval_summary(extra_errors, _EXTRA_STATISTICS),
        }
    errors.write(
        directory,
        dataset=dataset.source,
        predicted=settings.source,
        fingerprint=dataset.fingerprint(),
        clusters=None if settings.clusters is None else str(settings.clusters),
        clusters_assigned=assigned,
        excluded_training_frames=len(dataset) - len(frames),
        excluded_by=left_out["rule"] if left_out else None,
        ci95=interval_summary(errors)["ci95"],
        bootstrap={"resamples": BOOTSTRAP_RESAMPLES, "seed": 0, "over": "frames"},
        extra_test=extra_meta,
    )
    plot_cluster_errors(
        errors,
        os.path.join(directory, "cluster_errors.png"),
        model=_model_name(settings),
        dataset=os.path.basename(dataset.source),
    )
    if settings.write_worst:
        _write_worst(errors, dataset, directory, settings.write_worst)
    return errors, extra_errors


def _write_worst(errors, dataset, directory, k: int) -> None:
    """The frames of the ``k`` worst clusters: ``worst_clusters.extxyz``."""
    from .data import write_reference_frames

    worst = np.isin(errors.labels, errors.worst(k))
    write_reference_frames(
        dataset,
        os.path.join(directory, "worst_clusters.extxyz"),
        errors.frames[worst],
        [f"worst_cluster{c}" for c in errors.labels[worst]],
        cluster=errors.labels[worst],
        force_rmse=errors.frame_force_rmse[worst],
    )


def interval_summary(errors, names=None) -> dict:
    """Statistics with kcal/mol values and ``ci95``: bootstrap 95 % intervals
    (1000 resamples over the frames, seed 0)."""
    from .error_analysis import KCAL_MOL, STATISTICS

    names = names or STATISTICS
    values = errors.statistics()
    interval = errors.bootstrap(seed=0)
    summary = {name: values[name] for name in names}
    summary.update({f"{name}_kcal": values[name] / KCAL_MOL for name in names})
    summary["ci95"] = {name: list(interval[name]) for name in names}
    return summary


def _model_name(settings) -> str:
    """What made the predictions, for titles: a model folder, a file, a factory."""
    if settings.model is not None:
        return f"model {os.path.basename(os.path.normpath(settings.model))}"
    if settings.predicted is not None:
        return f"predictions {os.path.basename(settings.predicted)}"
    kwargs = f" {json.dumps(settings.calc_kwargs)}" if settings.calc_kwargs else ""
    return f"{settings.calculator}{kwargs}"


def _prediction_source(settings, dataset, workers=None):
    """A function giving the frames to evaluate and their energies and forces.

    Predictions come from a file, a saved model or a calculator factory; files and
    models are opened here so that a bad one stops the report before any work.
    Frames a model trained or validated on are left out (a kernel model nearly
    reproduces them), unless ``include_train``: matched by content, whichever
    file they come from (:meth:`SavedModel.seen_frames`). With ``workers`` a
    model predicts on the Dask workers.

    Returns
    -------
    predict : callable
        ``predict() -> (frames, energies, forces)``.
    left_out : dict or None
        With a model: ``count`` frames left out and the ``rule`` that found them.
    backend : Backend or None
        What predicts (None for predictions from a file): for an extra test set.
    """
    from .error_analysis import read_predictions

    every = np.arange(len(dataset))
    if settings.predicted is not None:
        energies, forces = read_predictions(
            settings.predicted,
            dataset,
            settings.pred_energy_key,
            settings.pred_forces_key,
        )
        return (lambda: (every, energies, forces)), None, None
    if settings.model is None:
        backend = _calculator_backend(settings, dataset)
        return (
            (lambda: (every, *_calculator_predictions(settings, backend, dataset))),
            None,
            backend,
        )
    from .models import load_model

    saved = load_model(settings.model)
    frames, left_out = _unseen_frames(saved, dataset, settings)
    backend = saved.backend if workers is None else workers.saved_predictor(saved)
    return (lambda: (frames, *backend.predict(dataset, frames))), left_out, backend


def _unseen_frames(saved, dataset, settings):
    """The frames to evaluate with a saved model, and what was left out."""
    every = np.arange(len(dataset))
    seen, rule = _seen_frames(saved, dataset, settings.model)
    left_out = {"count": 0, "rule": rule}
    if settings.include_train:
        logger.info(
            "%s: evaluating all %d frames, %d of them frames the model trained or "
            "validated on",
            option("include_train", True),
            len(dataset),
            int(seen.sum()),
        )
        return every, left_out
    if not seen.any():
        return every, left_out
    left_out["count"] = int(seen.sum())
    if left_out["count"] == len(dataset):
        raise InputError(
            f"{dataset.source}: all {len(dataset)} frames are frames the model "
            f"{settings.model} trained or validated on; pass "
            f"{option('include_train', True)} to evaluate them anyway"
        )
    logger.info(
        "leaving out %d of %d frames: the model trained or validated on them (%s)",
        left_out["count"],
        len(dataset),
        rule,
    )
    return np.flatnonzero(~seen), left_out


def _calculator_backend(settings, dataset):
    """The ``calculator`` as a backend, its calculator built now: a bad factory
    or bad arguments fail here, in one line."""
    from .backends.ase import ASEBackend

    backend = ASEBackend(factory=settings.calculator, kwargs=settings.calc_kwargs).fit(
        dataset
    )
    try:
        backend.calc  # noqa: B018 - build it now: a bad factory fails here
    except InputError:
        raise
    except Exception as exc:  # the factory's own complaint about its arguments
        raise InputError(
            f"{_calculator_text(settings)}: {type(exc).__name__}: {exc}"
        ) from exc
    return backend


def _calculator_text(settings) -> str:
    """The calculator and its arguments, as a message names them."""
    kwargs = json.dumps(settings.calc_kwargs)
    return (
        f"{option('calculator', settings.calculator)} with "
        f"{option('calc_kwargs', kwargs)}"
    )


def _seen_frames(saved, dataset, model_path):
    """Frames of ``dataset`` the model trained or validated on, and the rule used.

    By content when the model records its frames' hashes; for older models only
    when ``dataset`` is the very data it was trained on (same fingerprint).
    """
    seen = saved.seen_frames(dataset)
    if seen is not None:
        return seen, "matched by content"
    logger.warning(
        "%s: records no hashes of its training frames (saved by an older "
        "ase-flatten): its training frames are left out only when %s is the very "
        "data it was trained on; save the model again to match frames by content",
        model_path,
        dataset.source,
    )
    seen = np.zeros(len(dataset), dtype=bool)
    if saved.meta.get("dataset_fingerprint") == dataset.fingerprint():
        seen[saved.train_indices] = True
    return seen, "the model's training data file (no frame hashes)"


def _calculator_predictions(settings, backend, dataset):
    """Energies and forces of every frame from the calculator; its errors one line."""
    try:
        return backend.predict(dataset)
    except InputError:
        raise
    except Exception as exc:  # e.g. a method name the calculator only checks now
        raise InputError(
            f"{_calculator_text(settings)} failed: {type(exc).__name__}: {exc}"
        ) from exc
