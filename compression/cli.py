"""Command-line entry points for every compression step."""

from __future__ import annotations

import argparse
import logging
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
    p.add_argument("--output-dir", dest="output_dir")
    p.add_argument("--epochs", type=float)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--max-train-samples", dest="max_train_samples", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-threads", dest="num_threads", type=int)


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one step."""
    parser = argparse.ArgumentParser(prog="python -m compression", description=__doc__)
    parser.add_argument("--data", help="local oos-eval JSON or HF dataset name (default: local if present)")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_finetune_args(sub.add_parser("finetune", help="fine-tune a base encoder into a package"))
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )

    from compression.data import load_clinc

    if args.command == "finetune":
        from compression.finetune import finetune

        finetune(_finetune_config(args), load_clinc(args.data))
    return 0
