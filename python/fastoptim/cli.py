"""The `fastoptim` command line.

Each subcommand lives in its own module, which defines ``add_subparser(subparsers)``:
it adds its parser and sets ``func`` (called with the parsed arguments, returns the exit
status). To add a command, append its module to ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Sequence

COMMANDS = ("fastoptim.train_command", "fastoptim.search", "fastoptim.bench")


class _Parser(argparse.ArgumentParser):
    """Bad options are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="fastoptim", description="Fast CPU kernels for training and optimizing models.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        importlib.import_module(module).add_subparser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
