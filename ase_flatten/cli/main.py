"""Entry point of ``ase-flatten``: parses arguments, runs one subcommand.

Every subcommand module has ``description``, ``add_arguments(parser)`` and
``run(args)``; heavy imports live inside ``run``. User mistakes raise
:class:`~ase_flatten.exceptions.InputError`, printed as one line (exit 2) by
the runtime shared with ``md-validate`` (:mod:`ase_flatten.cli.runtime`); a
failed run (:class:`~ase_flatten.exceptions.RunError`) as one line (exit 1).
``ase-flatten -T COMMAND ...`` prints the traceback instead, as ASE's ``ase -T``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from .runtime import (
    ArgumentParser,
    add_traceback_argument,
    add_verbosity_arguments,
    execute,
)

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS = {
    "cluster": "ase_flatten.cli.cluster",
    "errors": "ase_flatten.cli.errors",
    "train": "ase_flatten.cli.train",
    "select": "ase_flatten.cli.select",
    "compare": "ase_flatten.cli.compare",
    "predict": "ase_flatten.cli.predict",
    "explore": "ase_flatten.cli.explore",
    "export": "ase_flatten.cli.export",
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ase-flatten",
        description="Find where a machine-learning force field fails on its data, "
        "and pick training sets that flatten the error.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    add_traceback_argument(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(
            name,
            help=module.description.splitlines()[0],
            description=module.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_verbosity_arguments(sub_parser)
        add_traceback_argument(sub_parser)
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ase-flatten``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return execute(f"ase-flatten {args.command}", args.run, args)


if __name__ == "__main__":
    sys.exit(main())
