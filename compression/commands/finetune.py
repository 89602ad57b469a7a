"""`finetune`: fine-tune a base encoder into a package."""

from __future__ import annotations

import argparse
from dataclasses import fields
from pathlib import Path

from compression.commands.common import UsageError, data_from_args
from compression.config import PRESETS, FinetuneConfig

HELP = "fine-tune a base encoder into a package"
DEFAULT_PRESET = "quick"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The preset, and the FinetuneConfig fields that override it (unset: the preset's, else the config's)."""
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET)
    p.add_argument("--base-model", dest="base_model", help="all-mpnet-base-v2, another HF id, or a local folder")
    p.add_argument("--output-dir", dest="output_dir", help="package folder to write")
    p.add_argument("--name", help="package name recorded in the manifest")
    p.add_argument("--epochs", type=float)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--max-train-samples", dest="max_train_samples", type=int, help="random subset of the train split")
    p.add_argument("--seed", type=int)
    p.add_argument("--num-threads", dest="num_threads", type=int, help="torch threads (0 or unset: torch's choice)")
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast in training (measure its accuracy first)"
    )
    for action in p._actions:  # unset means the preset's value: say what each preset sets
        default = preset_defaults(action.dest) if action.dest in {f.name for f in fields(FinetuneConfig)} else None
        if default:
            action.help = f"{action.help} ({default})" if action.help else default


def preset_defaults(field: str) -> str | None:
    """What an unset option becomes: the value per preset, or FinetuneConfig's when no preset sets it (None: none)."""
    values = {name: preset.get(field, getattr(FinetuneConfig, field)) for name, preset in sorted(PRESETS.items())}
    if len(set(map(str, values.values()))) == 1:
        value = next(iter(values.values()))
        return None if value is None else f"default: {value}"
    return "default: " + ", ".join(f"{v} with {name}" for name, v in values.items())


def config_from_args(args: argparse.Namespace) -> FinetuneConfig:
    """FinetuneConfig's defaults, then the preset's, then every option given."""
    cfg = FinetuneConfig()
    for key, value in PRESETS[args.preset].items():
        setattr(cfg, key, value)
    for f in fields(FinetuneConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, Path(value) if f.name == "output_dir" else value)
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return cfg


def run(args: argparse.Namespace) -> int:
    """Fine-tune one package."""
    from compression.finetune import finetune
    from compression.packaging import check_output_dir

    cfg = config_from_args(args)
    check_output_dir(cfg.output_dir)  # before hours of training, not after
    finetune(cfg, data_from_args(args))
    return 0
