"""`evaluate`: accuracy / size / latency of each backend on the test split."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from app.package import BACKEND_FILES
from compression.commands.common import add_package_arg, data_from_args, require_at_least

if TYPE_CHECKING:
    from compression.evaluate import EvalConfig

HELP = "accuracy / size / latency of each backend on the test split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package, its backends and the timing."""
    from compression.evaluate import EvalConfig

    add_package_arg(p)
    p.add_argument(
        "--backends",
        nargs="+",
        choices=list(BACKEND_FILES),  # every backend that reads a weights file
        default=list(EvalConfig.backends),
        help="default: every one the package has",
    )
    p.add_argument("--latency-runs", type=int, default=EvalConfig.latency_runs)
    p.add_argument("--num-threads", type=int, default=EvalConfig.num_threads)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig the options describe; a count below its minimum is a usage error."""
    from compression.evaluate import EvalConfig

    require_at_least(args, latency_runs=1, num_threads=0)
    return EvalConfig(args.package, tuple(args.backends), latency_runs=args.latency_runs, num_threads=args.num_threads)


def run(args: argparse.Namespace) -> int:
    """Evaluate the package and print the table."""
    from compression.evaluate import evaluate, format_table

    print(format_table(evaluate(config_from_args(args), data_from_args(args, args.package).test)))
    return 0
