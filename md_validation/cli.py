"""``md-validate``: NVT stability runs of trained models from a dataset frame.

Runs every --model at every --temperature in --replicas seeded replicas (ASE or
i-PI engine), checks each run for failure at every step (non-finite energies or
forces, a broken heavy-atom skeleton, a hydrogen farther than 1.7 Å from every
heavy atom, atoms closer than 0.5 Å, temperature runaway), and writes
DIR/summary.csv, DIR/energy_vs_time.png and DIR/<model>/<T>K/replica<k>/.

The energy zero is the lowest potential energy in --start's data. Runs start from
--start-frame (default: frame 0 of --start).

example: md-validate --model default=models/default --model improved=models/flat \\
             --start ethanol.xyz --time-ps 5 --replicas 3 -o md
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
from pathlib import Path

from ase_flatten.exceptions import InputError

from .engines import ENGINES

logger = logging.getLogger(__name__)
PROG = "md-validate"


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    return parse


def _model_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if "/" in name or name in (".", ".."):
        raise argparse.ArgumentTypeError(f"model name {name!r} must not be a path")
    return name, path


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        type=_model_spec,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a saved model directory under a name (repeat for several)",
    )
    parser.add_argument("--start", required=True, metavar="DATA", help="dataset")
    parser.add_argument("--start-frame", type=int, default=0, help="frame (0)")
    parser.add_argument(
        "--temperatures", type=_positive(float), nargs="+", default=[300.0, 400.0]
    )
    parser.add_argument("--timestep", type=_positive(float), default=0.5, help="fs")
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive(int), help="MD steps per run")
    length.add_argument("--time-ps", type=_positive(float), help="ps per run (5)")
    parser.add_argument("--replicas", type=_positive(int), default=1)
    parser.add_argument("--engine", choices=ENGINES, default="ase")
    parser.add_argument(
        "--thermostat",
        choices=("langevin", "bussi", "svr", "nve"),
        help="default: langevin (ase), svr (ipi)",
    )
    parser.add_argument("--tau", type=_positive(float), default=100.0, help="fs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--stride", type=_positive(int), default=10, help="trajectory stride (10)"
    )
    parser.add_argument(
        "--max-temperature-factor",
        type=_positive(float),
        default=3.0,
        help="runaway when T > this x target for --runaway-window-fs (3)",
    )
    parser.add_argument("--runaway-window-fs", type=_positive(float), default=50.0)
    parser.add_argument(
        "--high-error-factor",
        type=_positive(float),
        default=1.1,
        help="high-error cluster: RMSE above this x overall (1.1)",
    )
    parser.add_argument(
        "--export-risky",
        metavar="DIR",
        help="write each model's MD frames outside the domain or in high-error "
        "clusters, thinned by FPS, to DIR/<model>.extxyz: the frames to label next",
    )
    parser.add_argument(
        "--export-max", type=_positive(int), default=50, metavar="K", help="(50)"
    )
    parser.add_argument("-o", "--output", required=True, metavar="DIR")
    parser.add_argument("--overwrite", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    verbosity = parser.add_mutually_exclusive_group()
    verbosity.add_argument("-v", "--verbose", action="store_true")
    verbosity.add_argument("-q", "--quiet", action="store_true")
    return parser


def run(args) -> None:
    """Validate the models of ``args``; print the verdict lines."""
    import numpy as np

    from ase_flatten.data import read_dataset
    from ase_flatten.models import load_model

    from .failure import FailureCriteria
    from .validate import validate_models

    names = [name for name, _ in args.model]
    if len(set(names)) != len(names):
        raise InputError(f"--model names must differ, got {', '.join(names)}")
    output = Path(args.output)
    if (
        output.exists() and any(output.iterdir())
        if output.is_dir()
        else output.exists()
    ):
        if not args.overwrite:
            raise InputError(f"{output}: exists; pass --overwrite to replace it")
        shutil.rmtree(output) if output.is_dir() else output.unlink()
    if args.export_risky:
        from .export import check_export_available

        check_export_available(args.export_risky, args.overwrite)
    models = {name: load_model(path) for name, path in args.model}
    data = read_dataset(args.start)
    if not -len(data) <= args.start_frame < len(data):
        raise InputError(
            f"{args.start}: --start-frame {args.start_frame} out of range "
            f"({len(data)} frames)"
        )
    atoms = data.to_atoms(args.start_frame)
    for name, saved in models.items():
        if not np.array_equal(saved.backend.numbers_, atoms.numbers):
            raise InputError(
                f"--model {name}: trained on another molecule than {args.start} "
                f"({atoms.get_chemical_formula()})"
            )
    if args.steps:
        n_steps = args.steps
    else:
        n_steps = max(1, int(round((args.time_ps or 5.0) * 1000 / args.timestep)))
    criteria = FailureCriteria(
        max_temperature_factor=args.max_temperature_factor,
        temperature_window_fs=args.runaway_window_fs,
    )
    rows, lines = validate_models(
        models,
        atoms,
        output,
        temperatures=args.temperatures,
        n_steps=n_steps,
        replicas=args.replicas,
        seed=args.seed,
        reference_energy=float(data.energies.min()),
        high_error_factor=args.high_error_factor,
        engine=args.engine,
        thermostat=args.thermostat,
        timestep_fs=args.timestep,
        stride=args.stride,
        tau_fs=args.tau,
        criteria=criteria,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    for line in lines:
        print(line)
    if args.export_risky:
        from .export import ExportSettings, export_risky_frames, runs_from_rows

        settings = ExportSettings(args.export_max, args.high_error_factor, args.seed)
        runs = runs_from_rows(rows, output)
        exported = export_risky_frames(runs, models, args.export_risky, settings)
        for name, counts in exported.items():
            print(
                f"{name}: {counts['written']} of {counts['risky']} risky MD frames "
                f"to label in {counts['path'] or '(none)'}"
            )
    print(f"wrote {output / 'summary.csv'} and {output / 'energy_vs_time.png'}")


def main(argv: list[str] | None = None) -> int:
    """Run ``md-validate``; returns the exit status."""
    from ase_flatten.cli.main import execute

    args = build_parser().parse_args(argv)
    return execute(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
