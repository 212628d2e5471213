"""Train a model on N frames of a dataset and save it as a model directory.

With --strategy random (the paper's "default model"), N frames are drawn uniformly
at random (seeded) from DATA. The directory holds the model, its training indices
(DIR/train_indices.npy) and provenance (DIR/model.json); FlattenedCalculator(DIR),
`ase-flatten errors --model DIR` and md-validate load it.

Backend hyperparameters go in as -p KEY=VALUE (VALUE is read as JSON when it
parses, e.g. -p sigma=20 -p sigma_grid=[10,20,40] -p loss=energy).

example: ase-flatten train traj.xyz --backend sgdml --size 200 -o models/default
"""

from __future__ import annotations

import argparse
import json
import logging

from .common import add_dataset_arguments, positive_int

description = __doc__
logger = logging.getLogger(__name__)

STRATEGIES = ("random",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataset_arguments(parser)
    parser.add_argument(
        "--backend", required=True, help="sgdml, schnet or gap (see -p for options)"
    )
    parser.add_argument(
        "--size", type=positive_int, required=True, help="number of training frames"
    )
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="random",
        help="how the frames are chosen (default: random)",
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=parse_param,
        help="backend hyperparameter, repeatable",
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing model directory"
    )


def parse_param(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def run(args: argparse.Namespace) -> None:
    import time
    from pathlib import Path

    import numpy as np

    from ..backends import make_backend
    from ..exceptions import InputError
    from ..models import save_model
    from .common import read_dataset_arg

    out = Path(args.output)
    if out.exists() and any(out.iterdir()) and not args.overwrite:
        raise InputError(f"{out}: exists and is not empty; pass --overwrite to replace")
    backend = make_backend(args.backend, random_state=args.seed, **dict(args.param))
    dataset = read_dataset_arg(args)
    if args.size > len(dataset):
        raise InputError(
            f"{args.data}: --size {args.size} is more than its {len(dataset)} frames"
        )
    rng = np.random.default_rng(args.seed)
    train_idx = np.sort(rng.choice(len(dataset), args.size, replace=False))
    start = time.perf_counter()
    backend.fit(dataset, train_idx)
    seconds = time.perf_counter() - start
    save_model(
        out,
        backend,
        train_idx,
        dataset,
        overwrite=args.overwrite,
        strategy=args.strategy,
        seed=args.seed,
        train_seconds=round(seconds, 2),
    )
    print(
        f"trained {args.backend} on {args.size} {args.strategy} frames of "
        f"{dataset.formula} in {seconds:.1f} s -> {out}"
    )
