"""Explore with MD beyond the data: label where the model fails, retrain, repeat.

Each round runs short NVT replicas with the current model (--temperatures,
--replicas, --time-ps), harvests the frames leading up to every failure and the
frames outside the model's applicability domain or in its high-error clusters,
thins them by farthest-point sampling to --per-round frames, labels them with
--oracle (any ASE calculator: module:factory with --oracle-kwargs JSON), adds them
to the training set and retrains the model's backend. It stops when a round has
no failure and at most --stop-outside of its frames outside the domain, when
--label-budget oracle calls are spent, or after --max-rounds.

DIR becomes a model directory (FlattenedCalculator(DIR), md-validate --model
explored=DIR) with dataset.extxyz (the start data and the labelled MD frames),
explored.extxyz (the labelled MD frames alone, for any other model),
labels.jsonl (every oracle call) and history.json (per round). Checkpointed: run
the same command with --resume after an interruption; no label is paid twice.

example: ase-flatten explore models/default --oracle tblite.ase:TBLite \\
    --oracle-kwargs '{"method": "GFN2-xTB"}' --temperatures 300 400 -o explored/
"""

from __future__ import annotations

import argparse

from .common import (
    add_dask_arguments,
    add_oracle_arguments,
    build_oracle,
    nonnegative_int,
    positive_float,
    positive_int,
    share,
)
from .runtime import add_output_arguments

description = __doc__

COMMAND = "ase-flatten explore"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL_DIR", help="model directory to start from"
    )
    add_output_arguments(
        parser, COMMAND, resume="continue an interrupted exploration in DIR"
    )
    add_oracle_arguments(parser, required=True)
    md = parser.add_argument_group("MD of every round")
    md.add_argument(
        "--temperatures",
        type=positive_float,
        nargs="+",
        default=[300.0, 400.0],
        metavar="K",
        help="NVT temperatures (default: 300 400)",
    )
    md.add_argument(
        "--replicas", type=positive_int, default=4, help="runs per temperature (4)"
    )
    md.add_argument(
        "--time-ps", type=positive_float, default=2.0, help="length of a run (2 ps)"
    )
    md.add_argument(
        "--timestep", type=positive_float, default=0.5, help="time step (0.5 fs)"
    )
    md.add_argument(
        "--stride",
        type=positive_int,
        default=10,
        help="steps between saved (harvested) frames (10)",
    )
    md.add_argument(
        "--engine", default="ase", help="MD engine: ase or ipi (ase); checked in run"
    )
    loop = parser.add_argument_group("rounds and labels")
    loop.add_argument(
        "--per-round", type=positive_int, default=25, help="labels per round (25)"
    )
    loop.add_argument(
        "--label-budget",
        type=positive_int,
        default=100,
        help="oracle calls in all, failed ones included (100)",
    )
    loop.add_argument(
        "--max-rounds", type=positive_int, default=5, help="rounds at most (5)"
    )
    loop.add_argument(
        "--precursors",
        type=nonnegative_int,
        default=3,
        help="saved frames before each failure taken as candidates (3)",
    )
    loop.add_argument(
        "--stop-outside",
        type=share,
        default=0.05,
        help="stop after a round without failures and at most this share of "
        "frames outside the domain (0.05)",
    )
    loop.add_argument(
        "--warm-start",
        action="store_true",
        help="each retraining continues from the last round's model with the "
        "backend's warm schedule (the start model's warm_lr, warm_epochs, "
        "warm_patience) instead of training from scratch; schnet and mace only",
    )
    loop.add_argument("--seed", type=nonnegative_int, default=0, help="seed (0)")
    parser.add_argument(
        "--jobs",
        type=positive_int,
        default=1,
        help="worker processes for MD replicas and labels (1)",
    )
    add_dask_arguments(parser, chunk=False)


def run(args: argparse.Namespace) -> None:
    from md_validation.explore import ExploreSettings, explore

    from ..dask_workers import dask_client

    settings = ExploreSettings(
        temperatures=tuple(args.temperatures),
        replicas=args.replicas,
        time_ps=args.time_ps,
        timestep_fs=args.timestep,
        stride=args.stride,
        engine=args.engine,
        per_round=args.per_round,
        label_budget=args.label_budget,
        max_rounds=args.max_rounds,
        precursors=args.precursors,
        stop_outside_share=args.stop_outside,
        seed=args.seed,
        warm_start=args.warm_start,
    )
    oracle = build_oracle(args)
    try:
        with dask_client(args.dask) as client:  # --dask: the labels on its workers
            result = explore(
                args.model,
                oracle,
                settings,
                args.output,
                resume=args.resume,
                overwrite=args.overwrite,
                jobs=args.jobs,
                client=client,
            )
    except KeyboardInterrupt:
        print(
            f"interrupted: finished rounds and every label are saved in "
            f"{args.output}.partial; run the same command with --resume to continue"
        )
        raise
    last = result.history[-1]
    print(
        f"explored {len(result.history)} rounds ({result.stopped}): "
        f"{result.n_labels} oracle calls, {result.n_added} MD frames added -> "
        f"{result.directory}\n"
        f"last round: {last['failed']}/{last['runs']} runs failed, "
        f"{100 * last['outside_share']:.1f} % of {last['frames']} frames outside "
        "the domain"
    )
    print(f"history: {result.directory / 'history.json'}")
