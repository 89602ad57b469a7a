"""`frontier`: the best oos recall any threshold reaches at an in-scope floor (a diagnostic, not a rule)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from compression.commands.common import UsageError, data_from_args
from research.commands.common import print_table

if TYPE_CHECKING:
    from research.frontier import FrontierConfig

HELP = "best oos recall any threshold reaches at an in-scope floor (a diagnostic, not a rule)"
BACKENDS = ["torch", "torch-int8", "onnx", "onnx-int8"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The packages, the splits and backend, the floors and the target; defaults from FrontierConfig."""
    from research.frontier import FrontierConfig as Cfg

    p.add_argument("packages", type=Path, nargs="+", help="package folders")
    p.add_argument("--splits", nargs="+", choices=["validation", "test"], default=list(Cfg.splits))
    p.add_argument("--backend", choices=BACKENDS, default=Cfg.backend)
    p.add_argument(
        "--min-in-scope",
        type=float,
        nargs="+",
        default=list(Cfg.min_in_scope),
        help="in-scope accuracy floors (one table row each)",
    )
    p.add_argument(
        "--min-oos-recall", type=float, default=Cfg.min_oos_recall, help="oos recall target read off the frontier"
    )
    p.add_argument("--num-threads", type=int, default=Cfg.num_threads)
    p.add_argument("--output", type=Path, help="also write the Markdown table here")


def config_from_args(args: argparse.Namespace) -> FrontierConfig:
    """The FrontierConfig the options describe; floors outside (0, 1] or missing packages are usage errors."""
    from research.frontier import FrontierConfig

    if not all(0.0 < f <= 1.0 for f in args.min_in_scope) or not 0.0 <= args.min_oos_recall <= 1.0:
        raise UsageError("--min-in-scope must be in (0, 1] and --min-oos-recall in [0, 1]")
    missing = [str(p) for p in args.packages if not (p / "manifest.json").is_file()]
    if missing:
        raise UsageError(f"no model package at {', '.join(missing)}")
    return FrontierConfig(
        packages=tuple(args.packages),
        splits=tuple(args.splits),
        backend=args.backend,
        min_in_scope=tuple(args.min_in_scope),
        min_oos_recall=args.min_oos_recall,
        num_threads=args.num_threads,
    )


def run(args: argparse.Namespace) -> int:
    """Print the frontier table (and write it to --output)."""
    from research.frontier import format_frontier, run_frontier

    cfg = config_from_args(args)
    data = data_from_args(args, *cfg.packages)
    return print_table(
        format_frontier(run_frontier(cfg, {"validation": data.validation, "test": data.test}), cfg), args.output
    )
