"""Arguments and steps shared by several subcommands."""

from __future__ import annotations

import argparse
import json
import math

from .. import clustering_options as options

DATA_HELP = (
    "labelled trajectory: any ASE-readable file (.xyz, .extxyz, .xyz.gz, .traj, .db, "
    "...) or an sGDML/MD17 .npz; FILE@SELECTION reads some frames, ASE-style: "
    "data.extxyz@0:300, data.traj@-10:, data.db@'id<100'"
)


def field_default(settings, name: str):
    """The default of field ``name`` of the settings dataclass ``settings``.

    Command-line defaults are read from the settings they fill, so each default
    is written once: in the dataclass the Python workflow takes.
    """
    import dataclasses

    for item in dataclasses.fields(settings):
        if item.name != name:
            continue
        if item.default is not dataclasses.MISSING:
            return item.default
        if item.default_factory is not dataclasses.MISSING:
            return item.default_factory()
        break
    raise LookupError(f"{settings.__name__}.{name} has no default")


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0 (seeds)."""
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def held_out_fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None


def add_label_key_arguments(parser, recorded: bool = False) -> None:
    """``--energy-key`` / ``--forces-key``: where the reference labels are.

    ``recorded``: the command reads a model's dataset, whose keys the model
    recorded; those are the default.
    """
    default = "the model's recorded key, else " if recorded else ""
    parser.add_argument(
        "--energy-key",
        metavar="KEY",
        help="info key of the reference energy, e.g. REF_energy (MACE) "
        f"(default: {default}the calculator's energy)",
    )
    parser.add_argument(
        "--forces-key",
        metavar="KEY",
        help="arrays key of the reference forces, e.g. REF_forces (MACE) "
        f"(default: {default}the calculator's forces)",
    )


def add_dataset_arguments(
    parser: argparse.ArgumentParser, recorded: bool = False
) -> None:
    """DATA, ``--index``, ``--format`` and the label keys (``recorded``: a model's
    recorded keys are the default, see :func:`add_label_key_arguments`)."""
    parser.add_argument("data", metavar="DATA", help=DATA_HELP)
    parser.add_argument(
        "--index",
        help="frames to read, ASE-style, e.g. 0:300 (default: all); the same as "
        "DATA@0:300, give one of them",
    )
    parser.add_argument(
        "--format", help="ASE format of DATA when its suffix is unusual"
    )
    add_label_key_arguments(parser, recorded)


def add_clustering_arguments(
    parser: argparse.ArgumentParser, seed: bool = True
) -> None:
    """The clustering options of ``cluster``, ``errors``, ``train`` and ``select``.

    Choices and defaults come from :mod:`ase_flatten.clustering_options`;
    ``seed=False`` leaves ``--seed`` to a command that gives it its own meaning.
    """
    group = parser.add_argument_group("clustering (the paper's defaults)")
    group.add_argument(
        "--n-geometry",
        type=positive_int,
        default=options.N_GEOMETRY,
        help=f"Ward clusters on the descriptor (default: {options.N_GEOMETRY})",
    )
    group.add_argument(
        "--n-energy",
        type=positive_int,
        default=options.N_ENERGY,
        help="KMeans energy levels in each geometry cluster "
        f"(default: {options.N_ENERGY})",
    )
    group.add_argument(
        "--subset-size",
        type=positive_int,
        default=options.SUBSET_SIZE,
        help="Ward runs on at most this many frames, the rest are assigned "
        f"(default: {options.SUBSET_SIZE})",
    )
    group.add_argument(
        "--assign",
        choices=options.ASSIGN_RULES,
        default=options.ASSIGN,
        help="assign frames to the cluster of smallest average (paper) or maximum "
        f"(authors' code) distance (default: {options.ASSIGN})",
    )
    group.add_argument(
        "--descriptor",
        choices=options.DESCRIPTORS,
        default=options.DESCRIPTOR,
        help="pairwise distances (paper) or inverse distances "
        f"(default: {options.DESCRIPTOR})",
    )
    group.add_argument(
        "--reduce",
        choices=options.REDUCTIONS,
        help="reduce the descriptor by PCA or RBF kernel PCA before clustering "
        "(larger molecules)",
    )
    group.add_argument(
        "--components",
        type=positive_int,
        default=options.N_COMPONENTS,
        help=f"components kept by --reduce (default: {options.N_COMPONENTS})",
    )
    if seed:
        group.add_argument(
            "--seed", type=nonnegative_int, default=0, help="random seed (default: 0)"
        )


def add_domain_argument(parser: argparse.ArgumentParser) -> None:
    """``--domain``: the applicability domain saved with the model."""
    parser.add_argument(
        "--domain",
        choices=options.DOMAIN_KINDS,
        default="distance",
        help="the applicability domain saved with the model (FlattenedCalculator "
        "domain=True, predict, md-validate): distance (descriptor distance to the "
        "nearest frame of the data) or quests (QUESTS dH of the most novel atomic "
        "environment; extra 'quests') (default: distance)",
    )


def data_file(args):
    """DATA and how to read it (``--index``, ``--format``, the label keys)."""
    from ..data import DataFile

    return DataFile(
        args.data,
        index=args.index,
        format=args.format,
        energy_key=args.energy_key,
        forces_key=args.forces_key,
    )


def read_dataset_arg(args):
    return data_file(args).read()


def settings_from(settings, args, **given):
    """The settings dataclass ``settings`` made from the arguments.

    A flag is its field's name with dashes (``--n-geometry``: ``n_geometry``),
    so each field is taken from the argument of its name; ``given`` supplies the
    fields the arguments hold under another name or form.
    """
    import dataclasses

    values = {
        item.name: getattr(args, item.name)
        for item in dataclasses.fields(settings)
        if item.name not in given and hasattr(args, item.name)
    }
    return settings(**values, **given)


def clustering_settings(args):
    """The :class:`~ase_flatten.clustering_options.ClusteringSettings` of the
    command-line options (``--components`` is ``n_components``)."""
    return settings_from(options.ClusteringSettings, args, n_components=args.components)


def fit_clusters(dataset, args):
    """Fit the two-stage clustering with the command-line options."""
    return clustering_settings(args).fit(dataset, args.seed)


def clusters_meta(dataset, args) -> dict:
    """What a clusters file records besides the model."""
    return clustering_settings(args).record(dataset, args.seed)


def parse_param(text: str) -> tuple[str, object]:
    """``KEY=VALUE`` with VALUE read as JSON when it parses (else a string)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def build_backend(name: str, params, seed: int = 0):
    """A new backend ``name`` with ``-p`` hyperparameters, checked now
    (:func:`ase_flatten.training.new_backend`)."""
    from ..training import new_backend

    return new_backend(name, params, seed)


def add_backend_arguments(parser: argparse.ArgumentParser, default=None) -> None:
    """``--backend`` and repeatable ``-p KEY=VALUE`` hyperparameters."""
    from ..backends import available_backends  # entry points only, no imports

    parser.add_argument(
        "--backend",
        required=default is None,
        default=default,
        help=", ".join(available_backends())
        + (f" (default: {default})" if default else ""),
    )
    parser.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        type=parse_param,
        help="backend hyperparameter, repeatable",
    )


def add_split_arguments(parser, settings) -> None:
    """The held-out test split shared by every strategy; defaults from the
    ``test_fraction`` and ``split_seed`` fields of ``settings`` (a dataclass)."""
    parser.add_argument(
        "--test-fraction",
        type=held_out_fraction,
        default=field_default(settings, "test_fraction"),
        help="held-out test share (%(default)s)",
    )
    parser.add_argument(
        "--split-seed",
        type=nonnegative_int,
        default=field_default(settings, "split_seed"),
        help="test split seed (%(default)s)",
    )


def share(text: str) -> float:
    """argparse type: a number in [0, 1]."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def add_oracle_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """The oracle's options: ``--oracle``, its kwargs, timeout and failure share."""
    group = parser.add_argument_group("the labelling oracle")
    group.add_argument(
        "--oracle",
        required=required,
        metavar="MODULE:FACTORY",
        help="ASE calculator factory giving reference labels, e.g. tblite.ase:TBLite",
    )
    group.add_argument(
        "--oracle-kwargs",
        default="{}",
        metavar="JSON",
        help='keyword arguments of the factory, e.g. \'{"method": "GFN2-xTB"}\'',
    )
    group.add_argument(
        "--oracle-timeout",
        type=positive_float,
        metavar="S",
        help="a call longer than this is a failed frame (default: no limit)",
    )
    group.add_argument(
        "--oracle-max-failures",
        type=share,
        default=0.2,
        metavar="SHARE",
        help="stop when more than this share of a round's frames fail (0.2)",
    )


def build_oracle(args: argparse.Namespace):
    """The :class:`~ase_flatten.oracle.Oracle` of the arguments, checked now."""
    import json

    from ..backends.ase import import_factory
    from ..exceptions import InputError
    from ..oracle import Oracle

    import_factory(args.oracle)  # a spec that does not import fails before any work

    try:
        kwargs = json.loads(args.oracle_kwargs)
    except json.JSONDecodeError as exc:
        raise InputError(f"--oracle-kwargs is not JSON ({exc})") from exc
    oracle = Oracle(
        args.oracle,
        kwargs,
        timeout_s=args.oracle_timeout,
        max_failure_share=args.oracle_max_failures,
    )
    return oracle


def add_dask_arguments(parser: argparse.ArgumentParser, chunk: bool = True) -> None:
    """``--dask ADDRESS|local:N`` (and ``--dask-chunk FRAMES``) on ``parser``."""
    from ..dask_workers import DEFAULT_CHUNK

    group = parser.add_argument_group("past one machine (Dask)")
    group.add_argument(
        "--dask",
        metavar="ADDRESS|local:N",
        help="run the parallel work on the workers of the Dask scheduler at ADDRESS "
        "(e.g. tcp://host:8786) or on N local worker processes (local:N); the "
        "workers must see the model and output folders",
    )
    if chunk:
        group.add_argument(
            "--dask-chunk",
            type=positive_int,
            default=DEFAULT_CHUNK,
            metavar="FRAMES",
            help=f"frames per prediction task, rounded up to whole batches of the "
            f"model ({DEFAULT_CHUNK})",
        )
