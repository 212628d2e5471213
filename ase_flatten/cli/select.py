"""Build a training set that flattens the model's error (the paper's loop).

Starting from --init random frames, each of --iterations rounds trains the backend,
measures its force error per cluster (the clustering options as in `cluster`) on
the selection pool, merges the clusters above --factor x the overall RMSE,
re-clusters them into --n-fine Ward clusters (on the descriptor itself) and
adds --step frames from the worst of them. Each cluster's error is estimated from
--error-sample 10 of its frames (0: every pool frame, as the paper), and the
frames of the merged clusters are then predicted. A test split (--test-fraction)
is never selected; all reported errors are on it. DIR becomes a model directory
(FlattenedCalculator(DIR) loads the final model) with train_indices.npy, train.xyz,
history.json and error_curves.png. Checkpointed every iteration: after Ctrl-C or a
crash, run the same command with --resume.

With --oracle (any ASE calculator, as `explore`), DATA may hold frames without
labels: the test split is labelled up front, then the initial set, the
--error-sample K frames per coarse cluster (10 unless given) and the frames
picked, and nothing else. The other frames' errors are estimated: from their
coarse cluster's sample, or with --error-estimate committee from a committee's
disagreement calibrated on the sample. Energy levels are skipped (--n-energy 1):
energies are unknown before labelling, and a model's predicted energies are least
right where its errors are. Labels go to DIR/labels.jsonl as they arrive (a
resumed run pays for none twice); DIR/labelled.extxyz holds every labelled frame
at the end.

example: ase-flatten select traj.xyz --backend sgdml -o flattened/
"""

from __future__ import annotations

import argparse

from ..selection.estimate import ESTIMATES
from ..selection.flatten import SelectionConfig
from ..selection.picking import ALLOCATIONS, CRITERIA, PICKS, THRESHOLDS
from ..selection.presets import PRESETS
from .common import (
    add_backend_arguments,
    add_clustering_arguments,
    add_dask_arguments,
    add_dataset_arguments,
    add_domain_argument,
    add_oracle_arguments,
    add_split_arguments,
    field_default,
    nonnegative_int,
    positive_float,
    positive_int,
)
from .runtime import add_output_arguments

description = __doc__


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    add_backend_arguments(parser, default=field_default(SelectionConfig, "backend"))
    add_output_arguments(
        parser,
        "ase-flatten select",
        resume="continue an interrupted run in DIR",
        overwrite=False,
    )
    loop = parser.add_argument_group("the loop (the paper's defaults)")
    loop.add_argument(
        "--init",
        type=positive_int,
        default=field_default(SelectionConfig, "init"),
        help="initial random frames (%(default)s)",
    )
    loop.add_argument(
        "--step",
        type=positive_int,
        default=field_default(SelectionConfig, "step"),
        help="frames added per iteration (%(default)s)",
    )
    loop.add_argument(
        "--iterations",
        type=nonnegative_int,
        default=field_default(SelectionConfig, "iterations"),
        help="iterations (%(default)s)",
    )
    loop.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="paper",
        help="the selection rules to start from; the flags below change single "
        "rules (paper: the paper's rules, which are the defaults shown)",
    )
    loop.add_argument(
        "--factor",
        type=positive_float,
        help="error threshold factor, > 0 "
        f"({field_default(SelectionConfig, 'factor')})",
    )
    loop.add_argument(
        "--threshold",
        choices=THRESHOLDS,
        help="factor x the overall RMSE (paper), x the mean of cluster RMSEs, or "
        "mass: the worst clusters that carry half the squared error (no factor)",
    )
    loop.add_argument(
        "--allocation",
        choices=ALLOCATIONS,
        help="one frame from each of the worst fine clusters (paper), proportional "
        "to fine-cluster size (paper's peptide) or to its squared error (authors' "
        "code)",
    )
    loop.add_argument(
        "--criterion",
        choices=CRITERIA,
        help="frame taken from a fine cluster: highest error (paper), centroid, random",
    )
    loop.add_argument(
        "--n-fine",
        type=positive_int,
        default=field_default(SelectionConfig, "n_fine"),
        help="fine clusters (%(default)s)",
    )
    loop.add_argument(
        "--error-sample",
        type=nonnegative_int,
        default=10,
        metavar="K",
        help="estimate each coarse cluster's error from at most K of its frames, "
        "then predict the frames of the clusters above the threshold (10); 0: "
        "predict every pool frame each iteration (the paper)",
    )
    loop.add_argument(
        "--error-estimate",
        choices=ESTIMATES,
        default=field_default(SelectionConfig, "error_estimate"),
        help="with --oracle, the errors of the frames without labels: cluster "
        "(their coarse cluster's sampled error) or committee (a committee's force "
        "disagreement, calibrated on the sampled frames; --committee members, "
        "each on --committee-subsample of the training set)",
    )
    loop.add_argument(
        "--committee",
        type=positive_int,
        default=field_default(SelectionConfig, "committee"),
        metavar="M",
        help="members of the error-estimate committee (%(default)s)",
    )
    loop.add_argument(
        "--committee-subsample",
        type=positive_float,
        default=field_default(SelectionConfig, "committee_subsample"),
        metavar="SHARE",
        help="each committee member's share of the training set (%(default)s)",
    )
    loop.add_argument(
        "--label-budget",
        type=positive_int,
        metavar="N",
        help="with --oracle: at most N oracle calls for training frames (initial "
        "set, error estimates, picks; the test split counted apart); the loop "
        "stops early when they are spent",
    )
    loop.add_argument(
        "--pick",
        choices=PICKS,
        help="beyond the paper: fine (the paper: fine Ward clusters of the "
        "high-error union, frames by --allocation and --criterion), fps "
        "(farthest-point picks among the frames above the threshold) or ranked "
        "(per-frame error ranking, damped near frames already chosen)",
    )
    loop.add_argument(
        "--diverse-share",
        type=float,
        metavar="F",
        help="beyond the paper: this share of every step's frames is picked by "
        "farthest-point sampling over the whole pool, away from the training set "
        "(0: the paper's rules only)",
    )
    loop.add_argument(
        "--warm-start",
        action="store_true",
        help="each iteration's fit after the first continues from the previous "
        "iteration's model with the backend's short warm schedule (-p warm_lr=, "
        "warm_epochs=, warm_patience=) instead of training from scratch (sgdml: "
        "searches only the previous sigma and its neighbours in sigma_grid; -p "
        "warm_sigma=keep: that sigma alone); the final model is still trained "
        "from scratch; schnet, mace and sgdml",
    )
    loop.add_argument(
        "--warm-final",
        action="store_true",
        help="with --warm-start, the final model continues from the last "
        "iteration's too (cheaper; its errors were measured higher for SchNet)",
    )
    add_split_arguments(loop, SelectionConfig)
    loop.add_argument(
        "--seed",
        type=nonnegative_int,
        default=field_default(SelectionConfig, "seed"),
        help="random seed (%(default)s)",
    )
    add_clustering_arguments(parser, seed=False)
    add_domain_argument(parser)
    add_dask_arguments(parser)
    add_oracle_arguments(parser, required=False)
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="worker processes for the oracle's labels (1; with --dask the labels "
        "are computed on the Dask workers)",
    )


def run(args: argparse.Namespace) -> None:
    from pathlib import Path

    from ..dask_workers import dask_client, worker_pool
    from ..domain import require_domain
    from ..exceptions import InputError
    from ..files import check_output_place
    from ..selection.flatten import run_selection
    from ..selection.presets import RULE_FIELDS
    from .common import build_backend, build_oracle

    check_output_place(args.output, inputs=[args.data])
    if args.label_budget is not None and not args.oracle:
        raise InputError("--label-budget counts oracle calls: give --oracle too")
    oracle = build_oracle(args) if args.oracle else None
    params = dict(args.param)
    build_backend(args.backend, params, args.seed)  # a bad parameter fails now
    rules = {
        name: getattr(args, name)
        for name in RULE_FIELDS
        if getattr(args, name) is not None
    }
    threshold = rules.get("threshold", PRESETS[args.preset].get("threshold"))
    if threshold == "mass" and args.factor is not None:
        raise InputError(
            f"--factor {args.factor:g} has no effect with --threshold mass (the worst "
            "clusters that carry half the squared error join, whatever the factor); "
            "give one of them"
        )
    config = SelectionConfig(
        **{**PRESETS[args.preset], **rules},
        backend=args.backend,
        params=params,
        init=args.init,
        step=args.step,
        iterations=args.iterations,
        n_geometry=args.n_geometry,
        n_energy=args.n_energy,
        n_fine=args.n_fine,
        subset_size=args.subset_size,
        assign=args.assign,
        descriptor=args.descriptor,
        reduce=args.reduce,
        n_components=args.components,
        error_sample=args.error_sample or None,  # 0: the whole pool
        error_estimate=args.error_estimate,
        committee=args.committee,
        committee_subsample=args.committee_subsample,
        label_budget=args.label_budget,
        test_fraction=args.test_fraction,
        split_seed=args.split_seed,
        seed=args.seed,
        warm_start=args.warm_start,
        warm_final=args.warm_final,
        domain=args.domain,
    )
    config.check_before_data()  # before the pool is read or the oracle asked
    require_domain(config.domain)
    try:
        with dask_client(args.dask) as client:
            dataset, labels = _read_data(args, oracle, config, client)
            scratch = Path(args.output) / ".dask-models"  # trained models for workers
            with worker_pool(client, scratch, args.dask_chunk) as workers:
                result = run_selection(
                    dataset,
                    config,
                    args.output,
                    resume=args.resume,
                    workers=workers,
                    labels=labels,
                )
    except KeyboardInterrupt:
        print(
            f"interrupted: finished iterations are saved in {args.output}; run the "
            "same command with --resume to continue"
        )
        raise
    _print_result(result, args.output)
    print(f"history: {result.directory / 'history.json'}")
    print(f"plot:    {result.directory / 'error_curves.png'}")
    paid = result.history[-1].get("labels_paid")
    if paid:
        print(
            f"labels paid: {paid['calls']} oracle calls (test split "
            f"{paid.get('test', 0)}, initial {paid.get('initial', 0)}, error "
            f"estimates {paid.get('estimate', 0)}, added {paid.get('added', 0)}; "
            f"{paid.get('failed', 0)} failed)"
        )
        if "budget" in paid:
            print(f"label budget: {paid['budget']}, {paid['budget_left']} left")


def _read_data(args, oracle, config, client=None):
    """The dataset, and with --oracle the pool whose missing labels it pays for.

    A pool with unlabelled frames changes ``config`` in place: energy levels
    skipped and an error sample of 10 frames per coarse cluster when
    ``--error-sample 0`` asked for the whole pool.
    """
    import logging
    from pathlib import Path

    from ..oracle import LabelStore
    from ..pool import read_pool
    from .common import read_dataset_arg

    if oracle is None:
        return read_dataset_arg(args), None
    pool = read_pool(
        args.data, args.index, args.format, args.energy_key, args.forces_key
    )
    if not pool.complete:
        log = logging.getLogger(__name__)
        if config.n_energy != 1:
            log.info("unlabelled frames: energy levels skipped (--n-energy 1)")
            config.n_energy = 1
        if config.error_sample is None:
            log.info(
                "unlabelled frames: errors estimated from 10 frames per cluster "
                "(--error-sample 0 would label the whole pool)"
            )
            config.error_sample = 10
    pool.oracle = oracle
    pool.store = LabelStore(Path(args.output) / "labels.jsonl")
    pool.jobs = args.jobs
    pool.client = client  # --dask: labels on the Dask workers too
    return pool.dataset, pool


def _print_result(result, output) -> None:
    """The final model against the first iteration's, saying what differs."""
    from ..error_analysis import KCAL_MOL

    first, final = result.history[0], result.history[-1]
    a, b = first["test"], final["test"]
    n_test = len(result.test_indices)

    def interval(entry, key):
        ci = entry.get(f"{key}_ci95")
        return f" [95 % CI {ci[0]:.4f}, {ci[1]:.4f}]" if ci else ""

    def worst(entry):
        if "max_cluster" not in entry:  # a history written by an older version
            return f"{entry['max_cluster_force_rmse']:.4f}"
        return (
            f"{entry['max_cluster_force_rmse']:.4f}"
            f"{interval(entry, 'max_cluster_force_rmse')} (cluster "
            f"{entry['max_cluster']}, {entry['max_cluster_frames']} test frames)"
        )

    print(
        f"{len(result.train_indices)} frames selected -> {output}\n"
        f"final model ({final['n_train']} frames) against the first iteration's "
        f"model ({first['n_train']} random frames), on {n_test} test frames:\n"
        f"  force RMSE {a['force_rmse']:.4f}{interval(a, 'force_rmse')} -> "
        f"{b['force_rmse']:.4f}{interval(b, 'force_rmse')} eV/Å "
        f"({b['force_rmse'] / KCAL_MOL:.3f} kcal/(mol Å))\n"
        f"  energy RMSE {a['energy_rmse']:.4f}{interval(a, 'energy_rmse')} -> "
        f"{b['energy_rmse']:.4f}{interval(b, 'energy_rmse')} eV\n"
        f"  worst cluster {worst(a)} -> {worst(b)} eV/Å\n"
        f"  (this mixes the loop's picks with growing the training set from "
        f"{first['n_train']} to {final['n_train']} frames: `ase-flatten compare` "
        f"with a random model of {final['n_train']} frames separates them)"
    )
