"""``md-validate``: NVT stability runs of trained models from a dataset frame.

Runs every --model at every --temperature in --replicas seeded replicas (ASE or
i-PI engine), checks each run for failure at every step (non-finite energies or
forces, a broken heavy-atom skeleton, a hydrogen farther than 1.7 Å from every
heavy atom, atoms closer than 0.5 Å, temperature runaway), and writes
DIR/summary.csv, DIR/energy_vs_time.png and DIR/<model>/<T>K/replica<k>/.

Replicas run in parallel (--jobs worker processes, default: the cores, or with
--dask ADDRESS|local:N one Dask task each); results do not depend on either.
DIR/survival.csv and survival.png (Kaplan-Meier) and DIR/comparison.json
(failures per ns, log-rank test of every pair of models at 0.05) give the verdict;
with --reference, the reference method's own MD is run too and each model's
averages and distance distribution are compared with it (comparison.json
"reference", reference.png).

The runs go into DIR.partial/ first, which becomes DIR when complete; after an
interruption the same command with --resume keeps the finished replicas.
--overwrite replaces only an earlier md-validate output.

The energy zero is the lowest potential energy in --start's data. Runs start from
--start-frame (default: frame 0 of --start).

A verdict gives the share of MD frames that were risky (outside the domain or in
high-error clusters), and "no difference detectable" says what the replica count
could have detected at all (see --replicas). Every number is checked (finite, in
range) before anything runs.

example: md-validate --model default=models/default --model improved=models/flat \\
             --start ethanol.xyz --time-ps 5 --replicas 16 -o md
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path

from ase_flatten import __version__
from ase_flatten.cli.common import (
    add_dask_arguments,
    add_label_key_arguments,
    field_default,
)
from ase_flatten.cli.runtime import (
    ArgumentParser,
    add_output_arguments,
    add_traceback_argument,
    add_verbosity_arguments,
    execute,
)
from ase_flatten.exceptions import InputError

from .engines import ENGINES
from .export import ExportSettings
from .failure import FailureCriteria
from .replicas import default_jobs
from .report import RESERVED_NAMES
from .settings import DEFAULT_REPLICAS, RunSettings
from .workflow import Protocol

logger = logging.getLogger(__name__)
PROG = "md-validate"


#: Seeds are below this (numpy's and i-PI's generators take 32-bit seeds; the
#: reference's seeds are offset by a million).
MAX_SEED = 2**31
#: Upper limits of numbers no molecular MD run means (refused at parse time).
MAX_TEMPERATURE_K = 100_000.0
MAX_TIMESTEP_FS = 10.0
MAX_REPLICAS = 100_000


def _number(kind, low=0.0, high=math.inf, low_inclusive=False):
    """An argparse type: a finite ``kind`` in (``low``, ``high``] (or [low, high])."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
        if low_inclusive and value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low:g}, got {text}")
        if not low_inclusive and value <= low:
            what = "positive" if low == 0 else f"> {low:g}"
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        if value > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:g}, got {text}")
        return value

    return parse


def _positive(kind, high=math.inf):
    return _number(kind, 0, high)


def _model_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    if "/" in name or "\\" in name or name.startswith("."):
        raise argparse.ArgumentTypeError(
            f"model name {name!r} must not be a path or start with '.'"
        )
    if not name.isprintable() or name != name.strip():
        raise argparse.ArgumentTypeError(
            f"model name {name!r}: no control characters or outer spaces"
        )
    taken = {reserved.lower() for reserved in RESERVED_NAMES}
    if name.lower() in taken:
        raise argparse.ArgumentTypeError(
            f"model name {name!r} is taken by an output file of {PROG} "
            f"({', '.join(RESERVED_NAMES)}): choose another"
        )
    return name, path


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=PROG,
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument(
        "--model",
        type=_model_spec,
        action="append",
        required=True,
        metavar="NAME=PATH",
        help="a saved model directory under a name (repeat for several)",
    )
    parser.add_argument("--start", required=True, metavar="DATA", help="dataset")
    parser.add_argument(
        "--start-frame",
        type=int,
        default=0,
        help="frame of --start to run from (default: %(default)s; negative counts "
        "from the end)",
    )
    add_label_key_arguments(parser)
    parser.add_argument(
        "--temperatures",
        type=_positive(float, MAX_TEMPERATURE_K),
        nargs="+",
        default=field_default(Protocol, "temperatures"),
        metavar="K",
        help="thermostat targets (default: "
        f"{' '.join(f'{t:g}' for t in field_default(Protocol, 'temperatures'))})",
    )
    parser.add_argument(
        "--timestep",
        type=_positive(float, MAX_TIMESTEP_FS),
        default=field_default(RunSettings, "timestep_fs"),
        metavar="FS",
        help=f"MD time step, fs (default: %(default)s; at most {MAX_TIMESTEP_FS:g})",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--steps", type=_positive(int), help="MD steps per run")
    length.add_argument(
        "--time-ps", type=_positive(float), help="ps per run (default: 5)"
    )
    parser.add_argument(
        "--replicas",
        type=_positive(int, MAX_REPLICAS),
        default=DEFAULT_REPLICAS,
        help="seeded replicas per model and temperature (default: %(default)s). "
        "What a comparison can detect at all (log-rank p < 0.05, one model never "
        "failing, the other's failures at distinct times): with 4 replicas only "
        ">= 3/4 failed, a model failing 79 %% of its runs found with 80 %% power; "
        "with 8, >= 4/8 and 58 %%; with 16 (the paper's protocol), >= 4/16 and "
        "32 %%; 1 or 2 replicas cannot show any difference",
    )
    parser.add_argument(
        "--engine",
        choices=ENGINES,
        default=field_default(RunSettings, "engine"),
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--thermostat",
        choices=("langevin", "bussi", "svr", "nve"),
        help="default: langevin (ase), svr (ipi)",
    )
    parser.add_argument(
        "--tau",
        type=_positive(float),
        default=field_default(RunSettings, "tau_fs"),
        metavar="FS",
        help="thermostat time constant, fs (default: %(default)s)",
    )
    parser.add_argument(
        "--seed",
        type=_number(int, 0, MAX_SEED - 1, low_inclusive=True),
        default=field_default(Protocol, "seed"),
        help="replica k uses seed + k (default: %(default)s; 0 to 2^31 - 1)",
    )
    parser.add_argument(
        "--stride",
        type=_positive(int),
        default=field_default(RunSettings, "stride"),
        help="steps between saved trajectory frames (default: %(default)s)",
    )
    parser.add_argument(
        "--max-temperature-factor",
        type=_number(float, 1.0),
        default=field_default(FailureCriteria, "max_temperature_factor"),
        help="runaway when T > this x target for --runaway-window-fs (default: "
        "%(default)s; above 1)",
    )
    parser.add_argument(
        "--runaway-window-fs",
        type=_positive(float),
        default=field_default(FailureCriteria, "temperature_window_fs"),
        help="(default: %(default)s)",
    )
    parser.add_argument(
        "--high-error-factor",
        type=_positive(float),
        default=field_default(Protocol, "high_error_factor"),
        help="high-error cluster: RMSE above this x overall (default: %(default)s)",
    )
    parser.add_argument(
        "--jobs",
        type=_positive(int),
        help="worker processes running replicas in parallel (default: the cores)",
    )
    parser.add_argument(
        "--reference",
        metavar="MODULE:FACTORY",
        help="the reference method as an ASE calculator factory, run with the same "
        "protocol (e.g. tblite.ase:TBLite)",
    )
    parser.add_argument(
        "--reference-kwargs",
        metavar="JSON",
        help='its keyword arguments, e.g. \'{"method": "GFN2-xTB", "verbosity": 0}\'',
    )
    parser.add_argument(
        "--reference-replicas",
        type=_positive(int),
        help="replicas of the reference (default: min(--replicas, 4))",
    )
    parser.add_argument(
        "--reference-time-ps",
        type=_positive(float),
        help="ps per reference run (default: as the models)",
    )
    parser.add_argument(
        "--export-risky",
        metavar="DIR",
        help="write each model's MD frames outside the domain or in high-error "
        "clusters, thinned by FPS, to DIR/<model>.extxyz: the frames to label next",
    )
    parser.add_argument(
        "--export-max",
        type=_positive(int),
        default=field_default(ExportSettings, "max_frames"),
        metavar="K",
        help="at most K frames per model (default: %(default)s)",
    )
    add_output_arguments(
        parser,
        PROG,
        resume="continue an interrupted run in DIR.partial, keeping finished replicas",
    )
    add_dask_arguments(parser, chunk=False)
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar over runs (there is none off a terminal either)",
    )
    parser.add_argument(
        "--log-every-ps",
        type=_number(float, 0.0, low_inclusive=True),
        default=1.0,
        metavar="PS",
        help="without the progress bar (off a terminal, or --no-progress), every "
        "replica logs where it is, its speed and the time left every PS simulated "
        "ps (default: %(default)s; 0: never)",
    )
    add_verbosity_arguments(parser)
    add_traceback_argument(parser)
    return parser


def _reference_spec(args):
    """The --reference ModelSpec (None without it); bad input is one line."""
    import json

    from .replicas import ModelSpec, import_factory

    if args.reference is None:
        if args.reference_kwargs is not None:
            raise InputError("--reference-kwargs needs --reference MODULE:FACTORY")
        return None
    try:
        kwargs = json.loads(args.reference_kwargs or "{}")
    except json.JSONDecodeError as exc:
        raise InputError(f"--reference-kwargs is not JSON ({exc})") from exc
    if not isinstance(kwargs, dict):
        raise InputError("--reference-kwargs must be a JSON object, e.g. '{}'")
    import_factory(args.reference)
    return ModelSpec("reference", factory=args.reference, kwargs=kwargs)


def _check_reference(spec, atoms) -> None:
    """Build the reference calculator and evaluate the start frame once."""
    try:
        calc = spec.calculator_factory()()
        work = atoms.copy()
        work.calc = calc
        work.get_potential_energy()
        work.get_forces()
    except Exception as exc:  # any failure of a user's calculator: one line
        raise InputError(
            f"--reference {spec.factory} with {spec.kwargs} fails on the start "
            f"frame ({type(exc).__name__}: {exc})"
        ) from exc


#: At most this many MD steps per run (a run keeps a record of every step).
MAX_STEPS = 100_000_000


def _check_apart(export: Path, output: Path) -> None:
    """--export-risky must be a folder of its own, apart from -o and its work folder."""
    from ase_flatten.files import partial_directory

    def resolved(path):
        return Path(os.path.realpath(os.path.abspath(path)))

    target = resolved(export)
    for other in (output, partial_directory(output)):
        place = resolved(other)
        if target == place or place in target.parents or target in place.parents:
            raise InputError(
                f"--export-risky {export}: overlaps the output {other}; choose a "
                "folder apart from -o"
            )


def _n_steps(time_ps, steps, timestep, option="--time-ps"):
    """MD steps per run; more than :data:`MAX_STEPS` is refused (one line)."""
    if steps:
        n_steps = steps
    else:
        n_steps = max(1, int(round((time_ps or 5.0) * 1000 / timestep)))
    if n_steps > MAX_STEPS:
        raise InputError(
            f"{'--steps' if steps else option}: {n_steps} MD steps per run; at most "
            f"{MAX_STEPS} (a run records every step)"
        )
    return n_steps


def run(args) -> None:
    """Validate the models of ``args``; print the verdict lines.

    Every input is checked before any output is touched; the runs go into
    ``<output>.partial/``, which becomes ``<output>`` when complete.
    """
    import numpy as np

    from ase_flatten.dask_workers import dask_client
    from ase_flatten.data import read_dataset
    from ase_flatten.files import RunFolder
    from ase_flatten.models import load_model

    from .workflow import REFERENCE, validate_models

    names = [name for name, _ in args.model]
    if len({name.lower() for name in names}) != len(names):
        raise InputError(
            f"--model names must differ (ignoring case: they name folders), got "
            f"{', '.join(names)}"
        )
    folders = [f"{t:g}K" for t in args.temperatures]
    if len(set(folders)) != len(folders):
        raise InputError(
            f"--temperatures must differ (to 6 digits: they name folders), got "
            f"{', '.join(folders)}"
        )
    reference = _reference_spec(args)
    if reference is not None and REFERENCE in names:
        raise InputError(f"--model {REFERENCE}: the name is taken by --reference")
    output = Path(args.output)
    inputs = [Path(args.start)] + [Path(path) for _, path in args.model]
    if args.export_risky:
        from .export import check_export_available

        _check_apart(Path(args.export_risky), output)
        check_export_available(args.export_risky, args.overwrite, inputs)
    models = {name: load_model(path) for name, path in args.model}
    data = read_dataset(
        args.start, energy_key=args.energy_key, forces_key=args.forces_key
    )
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
    if reference is not None:
        _check_reference(reference, atoms)
    bar = not args.no_progress and sys.stderr.isatty()
    # what every run shares, as given (recorded so: a resume compares them)
    run_options = dict(
        engine=args.engine,
        thermostat=args.thermostat,
        timestep_fs=args.timestep,
        stride=args.stride,
        tau_fs=args.tau,
        criteria=FailureCriteria(
            max_temperature_factor=args.max_temperature_factor,
            temperature_window_fs=args.runaway_window_fs,
        ),
    )
    protocol = Protocol(
        temperatures=list(args.temperatures),
        n_steps=_n_steps(args.time_ps, args.steps, args.timestep),
        replicas=args.replicas,
        seed=args.seed,
        reference_replicas=args.reference_replicas,
        reference_n_steps=args.reference_time_ps
        and _n_steps(
            args.reference_time_ps, None, args.timestep, "--reference-time-ps"
        ),
        run=RunSettings(**run_options),
        reference=reference,
        reference_energy=float(data.energies.min()),
        high_error_factor=args.high_error_factor,
    )
    settings = dict(
        models={name: str(Path(path).resolve()) for name, path in args.model},
        reference=None if reference is None else reference.describe(),
        start=str(Path(args.start).resolve()),
        start_frame=args.start_frame,
        temperatures=protocol.temperatures,
        n_steps=protocol.n_steps,
        replicas=protocol.replicas,
        seed=protocol.seed,
        reference_replicas=protocol.reference_replicas,
        reference_n_steps=protocol.reference_n_steps,
        run=dict(run_options, criteria=vars(run_options["criteria"])),
    )
    protocol.log_every_ps = 0.0 if bar else args.log_every_ps
    # a bad address fails before any output; the work folder stays locked until
    # it is published
    with (
        dask_client(args.dask) as client,
        RunFolder.for_output(
            output, PROG, settings, args.overwrite, args.resume, inputs
        ) as work,
    ):
        rows, lines = validate_models(
            models,
            atoms,
            work.path,
            protocol,
            jobs=args.jobs or default_jobs(),
            progress=bar,
            client=client,
        )
        work.publish()
    for line in lines:
        print(line)
    if args.export_risky:
        from .export import ExportSettings, export_risky_frames, runs_from_rows

        settings = ExportSettings(args.export_max, args.high_error_factor, args.seed)
        runs = runs_from_rows([row for row in rows if row["model"] in models], output)
        exported = export_risky_frames(
            runs, models, args.export_risky, settings, args.overwrite, inputs
        )
        for name, counts in exported.items():
            print(
                f"{name}: {counts['written']} of {counts['risky']} risky MD frames "
                f"to label in {counts['path'] or '(none)'}"
            )
    print(f"wrote {output / 'summary.csv'} and {output / 'energy_vs_time.png'}")


def main(argv: list[str] | None = None) -> int:
    """Run ``md-validate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return execute(PROG, run, args)


if __name__ == "__main__":
    sys.exit(main())
