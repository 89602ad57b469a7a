"""What several commands share: the package and quantization options, loading the data, usage errors."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compression.config import FinetuneConfig

if TYPE_CHECKING:
    from compression.data import ClincData

# The package most commands read by default: the teacher `finetune` writes.
DEFAULT_PACKAGE = FinetuneConfig.output_dir


class UsageError(Exception):
    """A bad combination of arguments: the CLI prints its usage and the message, and exits with code 2."""


def data_from_args(args: argparse.Namespace) -> ClincData:
    """The --data source with --oos-label and --domains; a bad file ends the command with one line, not a traceback."""
    from compression.data import load_data as load

    try:
        return load(args.data, oos_label=args.oos_label, domains_file=args.domains)
    except (ValueError, OSError) as exc:
        prog = getattr(args, "prog", "python -m compression")
        raise SystemExit(f"{prog}: error: --data: {exc}") from None


def add_package_arg(p: argparse.ArgumentParser) -> None:
    """--package: the model package folder a command reads."""
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE, help="model package folder")


def add_quant_args(p: argparse.ArgumentParser) -> None:
    """The int8 options, with QuantizeConfig's defaults."""
    from compression.quantize import EMBEDDING_BITS, GRAPHS, PRESETS, QuantizeConfig

    p.add_argument("--quant-preset", default=QuantizeConfig.preset, choices=PRESETS)
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=QuantizeConfig.per_channel,
        help="per-channel weight scales (default; --no-per-channel: one scale per matrix, slightly faster)",
    )
    p.add_argument(
        "--quant-graph",
        choices=GRAPHS,
        default=QuantizeConfig.graph,
        help="int8 from the package's fused model.onnx (default: QAttention and fused kernels) or the plain export",
    )
    p.add_argument(
        "--embedding-bits",
        type=int,
        choices=EMBEDDING_BITS,
        help=f"word-embedding table precision in the int8 model (4 = block-wise 4-bit, ~1.7x smaller table); "
        f"default {QuantizeConfig.embedding_bits}, and for build's student the preset's choice",
    )


def quant_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The QuantizeConfig fields the quantization options set (an unset --embedding-bits: the config's default)."""
    from compression.quantize import QuantizeConfig

    return {
        "preset": args.quant_preset,
        "per_channel": args.per_channel,
        "embedding_bits": args.embedding_bits or QuantizeConfig.embedding_bits,
        "graph": args.quant_graph,
    }
