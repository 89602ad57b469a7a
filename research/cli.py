"""Research diagnostics beside the compression pipeline (`python -m research STEP --help`)."""

from __future__ import annotations

import argparse

from compression import cli
from research.commands import COMMANDS

PROG = "python -m research"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser: the compression CLI's global options, then one subcommand per research command."""
    return cli.build_parser(COMMANDS, PROG, __doc__)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one diagnostic."""
    return cli.main(argv, COMMANDS, PROG, __doc__, loggers=("research", "compression", "app"))
