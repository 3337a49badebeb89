"""The `fastoptim` command line.

Each subcommand lives in its own module, which defines ``add_subparser(subparsers)``:
it adds its parser and sets ``func`` (called with the parsed arguments, returns the exit
status). To add a command, append its module to ``COMMANDS``.

Errors are one line on stderr with exit status 2. When the reader of stdout goes away
(``fastoptim train | head -4``) the command stops quietly with exit status 1, as Python
recommends for a broken pipe.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
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
    try:
        code = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush cannot fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1
    return code


if __name__ == "__main__":
    raise SystemExit(main())
