"""`calibrate`: choose the oos rule (score + threshold) on the validation split."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from app.decision import OOS_SCORES
from compression.commands.common import UsageError, add_package_arg, data_from_args

if TYPE_CHECKING:
    from compression.calibrate import CalibrateConfig

HELP = "choose the oos rule (score + threshold) on the validation split"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package, the objective and its budget, the scores to try."""
    from compression.calibrate import OBJECTIVES, CalibrateConfig

    add_package_arg(p)
    p.add_argument("--objective", default=CalibrateConfig.objective, choices=list(OBJECTIVES))
    p.add_argument(
        "--max-in-scope-loss",
        type=float,
        default=CalibrateConfig.max_in_scope_loss,
        help="recall-at-loss: in-scope accuracy budget",
    )
    p.add_argument(
        "--scores",
        default=",".join(CalibrateConfig.scores),
        help=f"comma-separated oos scores to try ({', '.join(OOS_SCORES)}); the best on validation wins",
    )


def config_from_args(args: argparse.Namespace) -> CalibrateConfig:
    """The CalibrateConfig the options describe; an unknown or empty --scores is a usage error."""
    from compression.calibrate import CalibrateConfig

    names = tuple(x.strip() for x in args.scores.split(",") if x.strip())
    unknown = [n for n in names if n not in OOS_SCORES]
    if unknown or not names:
        raise UsageError(f"--scores: unknown {unknown or 'empty list'}; choose from {', '.join(OOS_SCORES)}")
    if not 0.0 <= args.max_in_scope_loss < 1.0:
        raise UsageError(f"--max-in-scope-loss is a share of in-scope accuracy in [0, 1), got {args.max_in_scope_loss}")
    return CalibrateConfig(args.package, args.objective, max_in_scope_loss=args.max_in_scope_loss, scores=names)


def run(args: argparse.Namespace) -> int:
    """Calibrate the package's oos rule on validation."""
    from compression.calibrate import calibrate

    calibrate(config_from_args(args), data_from_args(args, args.package).validation)
    return 0
