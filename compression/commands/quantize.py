"""`quantize`: add model_quantized.onnx (ORT dynamic int8) to a package."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from compression.commands.common import add_package_arg, add_quant_args, quant_settings

if TYPE_CHECKING:
    from compression.quantize import QuantizeConfig

HELP = "add model_quantized.onnx (ORT dynamic int8) to a package"
READS_DATA = False  # it copies or converts a package: no --data, --oos-label or --domains


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package and the int8 options."""
    add_package_arg(p)
    add_quant_args(p)


def config_from_args(args: argparse.Namespace) -> QuantizeConfig:
    """The QuantizeConfig the options describe."""
    from compression.quantize import QuantizeConfig

    return QuantizeConfig(args.package, **quant_settings(args))


def run(args: argparse.Namespace) -> int:
    """Quantize the package's ONNX model."""
    from compression.quantize import quantize

    quantize(config_from_args(args))
    return 0
