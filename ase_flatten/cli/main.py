"""Entry point of ``ase-flatten``: parses arguments, runs one subcommand.

Every subcommand module has ``description``, ``add_arguments(parser)`` and
``run(args)``; heavy imports live inside ``run``. User mistakes raise
:class:`~ase_flatten.exceptions.InputError`, printed here as one line (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .. import __version__
from ..exceptions import InputError

COMMANDS = {
    "cluster": "ase_flatten.cli.cluster",
    "errors": "ase_flatten.cli.errors",
    "train": "ase_flatten.cli.train",
    "select": "ase_flatten.cli.select",
    "compare": "ase_flatten.cli.compare",
    "predict": "ase_flatten.cli.predict",
}


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``ase-flatten errors: error: ...``."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ase-flatten",
        description="Find where a machine-learning force field fails on its data, "
        "and pick training sets that flatten the error.",
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        sub_parser = sub.add_parser(
            name,
            help=module.description.splitlines()[0],
            description=module.description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        verbosity = sub_parser.add_mutually_exclusive_group()
        verbosity.add_argument("-v", "--verbose", action="store_true", help="debug log")
        verbosity.add_argument(
            "-q", "--quiet", action="store_true", help="warnings and errors only"
        )
        module.add_arguments(sub_parser)
        sub_parser.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``ase-flatten``; returns the exit status."""
    args = build_parser().parse_args(argv)
    return execute(f"ase-flatten {args.command}", args.run, args)


def execute(prog: str, run, args: argparse.Namespace) -> int:
    """Set up logging from ``-v``/``-q``, call ``run(args)``, map errors to status.

    A user mistake (:class:`InputError`) prints one line and gives 2; Ctrl-C and
    SIGTERM give 130 after the command's ``finally`` blocks cleaned up (temporary
    output folders, child processes). Shared by every command line of the project.
    """
    from ..signals import sigterm_as_interrupt

    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else None
    logging.basicConfig(
        level=level or logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        with sigterm_as_interrupt():
            run(args)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
