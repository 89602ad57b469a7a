"""`benchmark`: every package x backend in one run: accuracy, size, latency, ratios, plot."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from app.package import BACKEND_FILES
from compression.commands.common import data_from_args, require_at_least

if TYPE_CHECKING:
    from compression.benchmark import BenchmarkConfig

HELP = "every package x backend in one run: accuracy, size, latency, ratios, plot"
BACKENDS = list(BACKEND_FILES)  # every registered backend that reads a weights file


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Where the packages are, which backends, and how to time them."""
    from compression.benchmark import BenchmarkConfig as Cfg

    where = p.add_mutually_exclusive_group()
    where.add_argument("--artifacts", type=Path, default=Cfg.artifacts, help="folder searched for packages")
    where.add_argument("--packages", type=Path, nargs="+", help="explicit package folders (instead of --artifacts)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, help="default: all")
    p.add_argument("--reference", type=Path, help="reference package (default: the one named 'teacher'); row = torch")
    p.add_argument("--num-threads", type=int, default=Cfg.num_threads, help="threads for torch and ORT (0 = all cores)")
    p.add_argument("--latency-runs", type=int, default=Cfg.latency_runs, help="timed single-query runs per row")
    p.add_argument("--warmup-runs", type=int, default=Cfg.warmup_runs)
    p.add_argument("--rounds", type=int, default=Cfg.rounds, help="round-robin blocks the timed runs are split into")
    p.add_argument("--no-bert-base", action="store_true", help="skip the timing-only bert-base-shaped row")
    p.add_argument("--output-dir", type=Path, default=Cfg.output_dir)


def config_from_args(args: argparse.Namespace) -> BenchmarkConfig:
    """The BenchmarkConfig the options describe; a count below its minimum is a usage error."""
    from compression.benchmark import BenchmarkConfig

    require_at_least(args, latency_runs=1, warmup_runs=0, rounds=1, num_threads=0)
    return BenchmarkConfig(
        artifacts=args.artifacts,
        packages=tuple(args.packages or ()),
        backends=tuple(args.backends) if args.backends else None,
        reference=args.reference,
        num_threads=args.num_threads,
        latency_runs=args.latency_runs,
        warmup_runs=args.warmup_runs,
        rounds=args.rounds,
        bert_base=not args.no_bert_base,
        output_dir=args.output_dir,
    )


def run(args: argparse.Namespace) -> int:
    """Benchmark, write the reports and print the Markdown table."""
    from compression.benchmark import format_markdown, run_benchmark, write_reports
    from compression.benchmark.config import find_packages

    cfg = config_from_args(args)
    data = data_from_args(args, *(cfg.packages or (find_packages(cfg.artifacts) if cfg.artifacts.is_dir() else ())))
    report = run_benchmark(cfg, data.test, data.source)
    paths = write_reports(report, cfg.output_dir)
    print(format_markdown(report))
    print("wrote " + ", ".join(str(path) for path in paths.values()))
    return 0
