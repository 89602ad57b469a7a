"""`export`: add model.onnx (ORT graph-optimized) to a package."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from compression.commands.common import add_package_arg

if TYPE_CHECKING:
    from compression.export import ExportConfig

HELP = "add model.onnx (ORT graph-optimized) to a package"
READS_DATA = False  # it copies or converts a package: no --data, --oos-label or --domains


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package and the ORT optimization level."""
    from compression.export import ExportConfig

    add_package_arg(p)
    p.add_argument("--optimization-level", type=int, default=ExportConfig.optimization_level, choices=[1, 2, 99])


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """The ExportConfig the options describe."""
    from compression.export import ExportConfig

    return ExportConfig(args.package, args.optimization_level)


def run(args: argparse.Namespace) -> int:
    """Export the package's model to ONNX."""
    from compression.export import export

    export(config_from_args(args))
    return 0
