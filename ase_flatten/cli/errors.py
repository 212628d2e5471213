"""Per-cluster error analysis of a model's predictions (outlier detection).

Compares predicted energies and forces with the reference labels of DATA, frame by
frame, and reports them per cluster: DIR/cluster_errors.csv (one row per cluster,
sorted by force RMSE), DIR/frame_errors.csv, DIR/summary.json and
DIR/cluster_errors.png (the paper's Fig. 2). Errors in eV and eV/Å, with kcal/mol
columns beside them. The summary holds the frames of the worst cluster, the 99th
percentile and the maximum of the per-atom force-error norms (the length of
F_pred - F_ref at each atom), and a bootstrap 95 % interval over the frames for
each (1000 resamples, seed 0).
With --model or --calculator, --extra-test FILE also measures a labelled trajectory
of the same molecule that shares no frame with DATA or the model's training data
(e.g. MD at a higher temperature): DIR/summary.json's "extra_test".

example: ase-flatten errors traj.xyz --predicted mace_out.xyz -o report/
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

from ..distributed import add_dask_arguments
from .common import add_clustering_arguments, add_dataset_arguments, positive_int
from .runtime import add_output_arguments

description = __doc__
logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser, recorded=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--predicted",
        metavar="PRED",
        help="trajectory of the same frames with the model's energies and forces",
    )
    source.add_argument(
        "--model",
        metavar="MODEL",
        help="model directory from `ase-flatten train`: predict the frames with it",
    )
    source.add_argument(
        "--calculator",
        metavar="MODULE:CALLABLE",
        help="an ASE calculator factory, e.g. tblite.ase:TBLite",
    )
    parser.add_argument(
        "--calc-kwargs",
        default="{}",
        metavar="JSON",
        help='keyword arguments for --calculator, e.g. \'{"method": "GFN1-xTB"}\'',
    )
    parser.add_argument(
        "--pred-energy-key", help="info key of predicted energies (e.g. MACE_energy)"
    )
    parser.add_argument(
        "--pred-forces-key", help="arrays key of predicted forces (e.g. MACE_forces)"
    )
    parser.add_argument(
        "--clusters",
        metavar="NPZ",
        help="a saved clustering: from `ase-flatten cluster`, or a model's "
        "MODEL/clusters.npz; frames it was not made from are assigned to its "
        "clusters, as `predict` does (default: cluster DATA here)",
    )
    add_output_arguments(parser, COMMAND)
    parser.add_argument(
        "--write-worst",
        type=positive_int,
        metavar="K",
        help="write the frames of the K worst clusters to DIR/worst_clusters.extxyz",
    )
    parser.add_argument(
        "--align-energies",
        action="store_true",
        help="remove the mean energy difference first (a model with another zero)",
    )
    parser.add_argument(
        "--include-train",
        action="store_true",
        help="with --model: also evaluate the frames the model trained or validated "
        "on (found by content in any file; left out by default)",
    )
    parser.add_argument(
        "--extra-test",
        metavar="FILE",
        help="with --model or --calculator: also measure this labelled trajectory "
        "of the same molecule (e.g. hotter MD); it may hold no frame of DATA or "
        "of the model's training data",
    )
    add_clustering_arguments(parser)
    add_dask_arguments(parser)


COMMAND = "ase-flatten errors"


def run(args: argparse.Namespace) -> None:
    from ..distributed import dask_client, worker_pool
    from ..exceptions import InputError
    from ..outputs import atomic_directory, check_output_directory
    from .common import default_label_keys, read_dataset_arg

    inputs = [args.data, args.predicted, args.model, args.clusters, args.extra_test]
    if args.model:  # read DATA as the model's dataset was read, unless told
        default_label_keys(args, args.model)
    check_output_directory(args.output, COMMAND, args.overwrite, inputs)
    if args.dask and not args.model:
        raise InputError("--dask predicts with a saved model: give --model DIR")
    if args.extra_test and args.predicted:
        raise InputError(
            "--extra-test needs a model to predict its frames: give --model DIR or "
            "--calculator, not --predicted"
        )
    with (
        dask_client(args.dask) as client,
        worker_pool(client, chunk_frames=args.dask_chunk) as workers,
    ):
        dataset = read_dataset_arg(args)
        # a bad model fails now
        predict, left_out, backend = _prediction_source(args, dataset, workers)
        extra = _read_extra_test(args, dataset)
        labels, assigned = None, False
        if args.clusters:
            labels, assigned = _load_labels(args.clusters, dataset)
        elif args.model and os.path.exists(os.path.join(args.model, "clusters.npz")):
            logger.info(
                "clustering %s afresh; --clusters %s labels its frames with the "
                "model's clusters instead (the numbers predict and the calculator "
                "report)",
                dataset.source,
                os.path.join(args.model, "clusters.npz"),
            )
        with atomic_directory(args.output, COMMAND, args.overwrite, inputs) as tmp:
            errors, extra_errors = _write_report(
                args, dataset, predict, labels, left_out, tmp, assigned, backend, extra
            )
    _print_report(errors, args.output, left_out, extra_errors)


def _read_extra_test(args, dataset):
    """The --extra-test frames, checked against DATA and the model's training data."""
    from ..error_analysis import read_extra_test

    if not args.extra_test:
        return None
    models = []
    if args.model:
        from ..models import load_model

        models.append((args.model, load_model(args.model)))
    return read_extra_test(
        args.extra_test,
        dataset,
        models,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
    )


def _write_report(
    args, dataset, predict, labels, left_out, directory, assigned, backend, extra
):
    """Cluster (unless given ``labels``), predict, and write every report file."""
    from ..clustering import save_clusters
    from ..error_analysis import (
        BOOTSTRAP_RESAMPLES,
        cluster_errors,
        extra_test_errors,
    )
    from ..plots import plot_cluster_errors
    from .common import clusters_meta, fit_clusters

    if labels is None:
        model = fit_clusters(dataset, args)
        labels = model.labels_
        save_clusters(
            os.path.join(directory, "clusters.npz"),
            model,
            **clusters_meta(dataset, args),
        )
    frames, energies, forces = predict()
    errors = cluster_errors(
        dataset.subset(frames),
        energies,
        forces,
        labels[frames],
        align_energies=args.align_energies,
        frames=frames,
    )
    extra_errors = extra_meta = None
    if extra is not None:
        extra_errors = extra_test_errors(backend, extra)
        extra_meta = {
            "path": str(args.extra_test),
            "n_frames": len(extra),
            "fingerprint": extra.fingerprint(),
            **_interval_summary(extra_errors, ("force_rmse", "energy_rmse",
                                               "atom_error_p99", "atom_error_max")),
        }  # fmt: skip
    errors.write(
        directory,
        dataset=dataset.source,
        predicted=str(args.predicted or args.model or args.calculator),
        fingerprint=dataset.fingerprint(),
        clusters=args.clusters,
        clusters_assigned=assigned,
        excluded_training_frames=len(dataset) - len(frames),
        excluded_by=left_out["rule"] if left_out else None,
        ci95=_interval_summary(errors)["ci95"],
        bootstrap={"resamples": BOOTSTRAP_RESAMPLES, "seed": 0, "over": "frames"},
        extra_test=extra_meta,
    )
    plot_cluster_errors(
        errors,
        os.path.join(directory, "cluster_errors.png"),
        model=_model_name(args),
        dataset=os.path.basename(dataset.source),
    )
    if args.write_worst:
        from ..data import write_reference_frames

        worst = np.isin(errors.labels, errors.worst(args.write_worst))
        write_reference_frames(
            dataset,
            os.path.join(directory, "worst_clusters.extxyz"),
            errors.frames[worst],
            [f"worst_cluster{c}" for c in errors.labels[worst]],
            cluster=errors.labels[worst],
            force_rmse=errors.frame_force_rmse[worst],
        )
    return errors, extra_errors


def _interval_summary(errors, names=None) -> dict:
    """Statistics with kcal/mol values and ``ci95``: bootstrap 95 % intervals."""
    from ..error_analysis import KCAL_MOL, STATISTICS

    names = names or STATISTICS
    values = errors.statistics()
    interval = errors.bootstrap(seed=0)
    summary = {name: values[name] for name in names}
    summary.update({f"{name}_kcal": values[name] / KCAL_MOL for name in names})
    summary["ci95"] = {name: list(interval[name]) for name in names}
    return summary


def _model_name(args) -> str:
    """What made the predictions, for titles: a model folder, a file, a factory."""
    if args.model:
        return f"model {os.path.basename(os.path.normpath(args.model))}"
    if args.predicted:
        return f"predictions {os.path.basename(args.predicted)}"
    kwargs = "" if args.calc_kwargs.strip() in ("", "{}") else f" {args.calc_kwargs}"
    return f"{args.calculator}{kwargs}"


def _prediction_source(args, dataset, workers=None):
    """A function giving the frames to evaluate and their energies and forces.

    Predictions come from a file, a saved model or a calculator factory; files and
    models are opened here so that a bad one stops the command before any work.
    Frames a model trained or validated on are left out (a kernel model nearly
    reproduces them), unless --include-train: matched by content, whichever file
    they come from (:meth:`SavedModel.seen_frames`). With ``workers`` (--dask) a
    model predicts on the Dask workers.

    Returns
    -------
    predict : callable
        ``predict() -> (frames, energies, forces)``.
    left_out : dict or None
        With --model: ``count`` frames left out and the ``rule`` that found them.
    backend : Backend or None
        What predicts (None for --predicted): for an --extra-test set.
    """
    import json

    from ..error_analysis import read_predictions
    from ..exceptions import InputError

    every = np.arange(len(dataset))
    if args.predicted:
        energies, forces = read_predictions(
            args.predicted, dataset, args.pred_energy_key, args.pred_forces_key
        )
        return (lambda: (every, energies, forces)), None, None
    if args.model:
        from ..models import load_model

        saved = load_model(args.model)
        seen, rule = _seen_frames(saved, dataset, args.model)
        left_out = {"count": 0, "rule": rule}
        frames = every
        if args.include_train:
            logger.info(
                "--include-train: evaluating all %d frames, %d of them frames the "
                "model trained or validated on",
                len(dataset),
                int(seen.sum()),
            )
        elif seen.any():
            frames = np.flatnonzero(~seen)
            left_out["count"] = int(seen.sum())
            if not len(frames):
                raise InputError(
                    f"{dataset.source}: all {len(dataset)} frames are frames the "
                    f"model {args.model} trained or validated on; pass "
                    "--include-train to evaluate them anyway"
                )
            logger.info(
                "leaving out %d of %d frames: the model trained or validated on "
                "them (%s)",
                left_out["count"],
                len(dataset),
                rule,
            )
        backend = saved.backend if workers is None else workers.saved_predictor(saved)
    else:
        from ..backends.ase import ASEBackend

        try:
            kwargs = json.loads(args.calc_kwargs)
        except json.JSONDecodeError as exc:
            raise InputError(f"--calc-kwargs is not JSON ({exc})") from exc
        if not isinstance(kwargs, dict):
            raise InputError(
                f"--calc-kwargs must be a JSON object of keyword arguments, got "
                f"{args.calc_kwargs}"
            )
        backend = ASEBackend(factory=args.calculator, kwargs=kwargs).fit(dataset)
        try:
            backend.calc  # noqa: B018 - build it now: a bad factory fails here
        except InputError:
            raise
        except Exception as exc:  # the factory's own complaint about its arguments
            raise InputError(
                f"--calculator {args.calculator} with --calc-kwargs "
                f"{args.calc_kwargs}: {type(exc).__name__}: {exc}"
            ) from exc
        return (
            (lambda: (every, *_calculator_predictions(args, backend, dataset))),
            None,
            backend,
        )
    return (lambda: (frames, *backend.predict(dataset, frames))), left_out, backend


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


def _calculator_predictions(args, backend, dataset):
    """Energies and forces of every frame from a --calculator; its errors one line."""
    from ..exceptions import InputError

    try:
        return backend.predict(dataset)
    except InputError:
        raise
    except Exception as exc:  # e.g. a method name the calculator only checks now
        raise InputError(
            f"--calculator {args.calculator} with --calc-kwargs {args.calc_kwargs} "
            f"failed: {type(exc).__name__}: {exc}"
        ) from exc


def _load_labels(path, dataset):
    """Labels of DATA's frames from a clusters file: its own, or assigned."""
    from ..clustering import labels_for, load_clusters

    model, arrays = load_clusters(path)
    return labels_for(model, arrays, dataset, path)


def _print_report(errors, directory, left_out=None, extra=None):
    from ..error_analysis import KCAL_MOL

    s = errors.summary()
    if left_out and left_out["count"]:
        print(
            f"left out {left_out['count']} frames the model trained or validated on "
            f"({left_out['rule']}; --include-train keeps them)"
        )
    print(
        f"overall force RMSE {s['force_rmse']:.4f} eV/Å "
        f"({s['force_rmse'] / KCAL_MOL:.3f} kcal/(mol Å)), energy RMSE "
        f"{s['energy_rmse']:.4f} eV over {s['n_frames']} frames in "
        f"{s['n_clusters']} clusters"
    )
    print(
        f"worst cluster {s['max_cluster']} ({s['max_cluster_frames']} frames): "
        f"{s['max_cluster_force_rmse']:.4f} eV/Å = {s['max_ratio']:.2f}x overall; "
        f"best {s['min_cluster']}: {s['min_ratio']:.2f}x"
    )
    print(
        f"per-atom force error |F_pred - F_ref|: p99 {s['atom_error_p99']:.4f} eV/Å "
        f"({s['atom_error_p99_kcal']:.3f} kcal/(mol Å)), max "
        f"{s['atom_error_max']:.4f} eV/Å ({s['atom_error_max_kcal']:.3f} kcal/(mol Å))"
    )
    if extra is not None:
        e = extra.statistics()
        print(
            f"extra test set ({len(extra.labels)} frames): force RMSE "
            f"{e['force_rmse']:.4f} eV/Å ({e['force_rmse'] / KCAL_MOL:.3f} "
            f"kcal/(mol Å)) = {e['force_rmse'] / s['force_rmse']:.2f}x DATA's; "
            f"per-atom p99 {e['atom_error_p99']:.4f} eV/Å"
        )
    print("worst clusters (cluster, frames, force RMSE eV/Å, ratio):")
    for c in errors.worst(5):
        print(
            f"  {c:4d} {errors.n_frames[c]:6d} {errors.force_rmse[c]:.4f} "
            f"{errors.force_rmse[c] / s['force_rmse']:.2f}x"
        )
    print(f"report: {os.path.join(directory, 'cluster_errors.csv')}")
    print(f"plot:   {os.path.join(directory, 'cluster_errors.png')}")
