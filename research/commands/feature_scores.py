"""`feature-scores`: Mahalanobis and nearest-neighbour oos scores on the encoder's features beside the logit scores."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from compression.commands.common import UsageError, data_from_args
from research.commands.common import print_table

if TYPE_CHECKING:
    from research.feature_scores import FeatureScoresConfig

HELP = "oos scores from the encoder's features (Mahalanobis, k-NN) beside the logit scores (a diagnostic, not a rule)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package, the ONNX backend, the targets the oracle is read at; defaults from FeatureScoresConfig."""
    from research.feature_scores import FeatureScoresConfig as Cfg

    p.add_argument("package", type=Path, help="package folder")
    p.add_argument("--backend", choices=["onnx", "onnx-int8"], default=Cfg.backend)
    p.add_argument("--min-in-scope", type=float, default=Cfg.min_in_scope, help="in-scope target of the oracle")
    p.add_argument("--min-oos-recall", type=float, default=Cfg.min_oos_recall, help="oos recall target of the oracle")
    p.add_argument("--k", type=int, default=Cfg.k, help="the neighbour whose similarity is the k-NN score")
    p.add_argument("--num-threads", type=int, default=Cfg.num_threads)
    p.add_argument("--output", type=Path, help="also write the Markdown table here")


def config_from_args(args: argparse.Namespace) -> FeatureScoresConfig:
    """The FeatureScoresConfig the options describe; out-of-range targets, k < 1 or no package are usage errors."""
    from research.feature_scores import FeatureScoresConfig

    if not 0.0 < args.min_in_scope <= 1.0 or not 0.0 <= args.min_oos_recall <= 1.0:
        raise UsageError("--min-in-scope must be in (0, 1] and --min-oos-recall in [0, 1]")
    if args.k < 1:
        raise UsageError(f"--k must be at least 1, got {args.k}")
    if not (args.package / "manifest.json").is_file():
        raise UsageError(f"no model package at {args.package}")
    return FeatureScoresConfig(
        package=args.package,
        backend=args.backend,
        min_in_scope=args.min_in_scope,
        min_oos_recall=args.min_oos_recall,
        k=args.k,
        num_threads=args.num_threads,
    )


def run(args: argparse.Namespace) -> int:
    """Print the table (and write it to --output)."""
    from research.feature_scores import format_feature_scores, run_feature_scores

    cfg = config_from_args(args)
    manifest, rows = run_feature_scores(cfg, data_from_args(args, cfg.package))
    return print_table(format_feature_scores(manifest, rows, cfg), args.output)
