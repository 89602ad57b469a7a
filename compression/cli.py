"""Command-line entry points for every compression step (`python -m compression STEP --help`)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import fields
from pathlib import Path

from compression.config import PRESETS, FinetuneConfig

logger = logging.getLogger("compression")


def _finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    cfg = FinetuneConfig()
    for key, value in PRESETS[args.preset].items():
        setattr(cfg, key, value)
    for f in fields(FinetuneConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, Path(value) if f.name == "output_dir" else value)
    return cfg


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--base-model", dest="base_model", help="HF model id or local dir")
    p.add_argument("--output-dir", dest="output_dir", help="package folder to write (default artifacts/teacher)")
    p.add_argument("--name", help="package name recorded in the manifest")
    p.add_argument("--epochs", type=float)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--max-train-samples", dest="max_train_samples", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-threads", dest="num_threads", type=int)


def _add_package_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package", type=Path, default=Path("artifacts/teacher"), help="model package folder")


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quant-preset", default="avx512_vnni", choices=["avx512_vnni", "avx2", "arm64"])
    p.add_argument("--per-channel", action="store_true", help="per-channel weight scales")


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m compression", description=__doc__)
    parser.add_argument("--data", help="local oos-eval JSON or HF dataset name (default: local file if present)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_finetune_args(sub.add_parser("finetune", help="fine-tune a base encoder into a package"))
    p = sub.add_parser("export", help="add model.onnx (ORT graph-optimized) to a package")
    _add_package_arg(p)
    p.add_argument("--optimization-level", type=int, default=2, choices=[1, 2, 99])
    p = sub.add_parser("quantize", help="add model_quantized.onnx (ORT dynamic int8) to a package")
    _add_package_arg(p)
    _add_quant_args(p)
    p = sub.add_parser("calibrate", help="choose the oos threshold on the validation split")
    _add_package_arg(p)
    p.add_argument("--objective", default="balanced", choices=["balanced", "accuracy"])
    p = sub.add_parser("evaluate", help="accuracy / size / latency of each backend on the test split")
    _add_package_arg(p)
    p.add_argument("--backends", nargs="+", default=["torch", "torch-int8", "onnx", "onnx-int8"])
    p.add_argument("--latency-runs", type=int, default=200)
    p.add_argument("--num-threads", type=int, default=0)
    p = sub.add_parser("build", help="finetune -> export -> quantize -> calibrate -> evaluate")
    _add_finetune_args(p)
    _add_quant_args(p)
    p.add_argument("--reuse", action="store_true", help="keep an existing trained package (skip finetune)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one step."""
    args = build_parser().parse_args(argv)
    # Third-party libraries (ORT's quantizer) log at INFO on the root logger: keep them quiet.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("compression", "app"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)

    from compression.data import load_clinc

    if args.command == "finetune":
        from compression.finetune import finetune

        finetune(_finetune_config(args), load_clinc(args.data))
    elif args.command == "export":
        from compression.export import ExportConfig, export

        export(ExportConfig(args.package, args.optimization_level))
    elif args.command == "quantize":
        from compression.quantize import QuantizeConfig, quantize

        quantize(QuantizeConfig(args.package, args.quant_preset, args.per_channel))
    elif args.command == "calibrate":
        from compression.calibrate import CalibrateConfig, calibrate

        calibrate(CalibrateConfig(args.package, args.objective), load_clinc(args.data).validation)
    elif args.command == "evaluate":
        from compression.evaluate import EvalConfig, evaluate, format_table

        cfg = EvalConfig(
            args.package, tuple(args.backends), latency_runs=args.latency_runs, num_threads=args.num_threads
        )
        print(format_table(evaluate(cfg, load_clinc(args.data).test)))
    elif args.command == "build":
        build(args)
    return 0


def build(args: argparse.Namespace) -> None:
    """Run the whole chain for one preset and print the evaluation table."""
    from compression.calibrate import CalibrateConfig, calibrate
    from compression.data import load_clinc
    from compression.evaluate import EvalConfig, evaluate, format_table
    from compression.export import ExportConfig, export
    from compression.finetune import finetune
    from compression.quantize import QuantizeConfig, quantize

    start = time.perf_counter()
    cfg = _finetune_config(args)
    data = load_clinc(args.data)
    if args.reuse and (Path(cfg.output_dir) / "model.safetensors").is_file():
        logger.info("reusing trained weights in %s", cfg.output_dir)
    else:
        finetune(cfg, data)
    export(ExportConfig(cfg.output_dir))
    quantize(QuantizeConfig(cfg.output_dir, args.quant_preset, args.per_channel))
    calibrate(CalibrateConfig(cfg.output_dir), data.validation)
    results = evaluate(EvalConfig(cfg.output_dir, num_threads=cfg.num_threads or 0), data.test)
    print(format_table(results))
    logger.info(
        "build (%s preset) finished in %.1f min: %s", args.preset, (time.perf_counter() - start) / 60, cfg.output_dir
    )
