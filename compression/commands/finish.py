"""`finish`: export -> quantize -> calibrate -> evaluate a trained package (e.g. one trained on a GPU machine)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compression.commands.common import add_package_arg, add_quant_args, data_from_args, quant_settings

if TYPE_CHECKING:
    from compression.data import ClincData

HELP = "export -> quantize -> calibrate -> evaluate a trained package (e.g. from a GPU)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The package, the int8 options and the threads."""
    add_package_arg(p)
    add_quant_args(p)
    p.add_argument("--num-threads", type=int, default=0)


def run(args: argparse.Namespace) -> int:
    """Finish one package (e.g. one trained with --no-finish on a GPU machine without optimum)."""
    if not (args.package / "manifest.json").is_file():
        raise SystemExit(f"finish: no model package at {args.package} (pass --package PACKAGE_DIR)")
    finish_package(
        args.package, data_from_args(args, args.package), num_threads=args.num_threads, **quant_settings(args)
    )
    return 0


def finish_package(package: Path, data: ClincData, num_threads: int = 0, **quant: Any) -> dict:
    """export -> quantize (`quant`: QuantizeConfig fields) -> calibrate -> evaluate; prints and returns the table."""
    from app.package import read_manifest
    from compression.calibrate import CalibrateConfig, calibrate
    from compression.evaluate import EvalConfig, evaluate, format_table
    from compression.export import ExportConfig, export
    from compression.quantize import QuantizeConfig, quantize

    export(ExportConfig(package))
    quantize(QuantizeConfig(package, **quant))
    calibrate(CalibrateConfig(package, num_threads=num_threads), data.validation)
    results = evaluate(EvalConfig(package, num_threads=num_threads), data.test)
    if "pruning" in read_manifest(package).source:
        from compression.prune.sizes import record_compressed_sizes

        record_compressed_sizes(package)  # the ONNX files exist now
    print(f"{package}:\n{format_table(results)}")
    return results
