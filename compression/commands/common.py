"""What several commands share: the package and quantization options, loading the data, usage errors."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compression.config import FinetuneConfig

if TYPE_CHECKING:
    from compression.data import ClincData

logger = logging.getLogger(__name__)

# The package most commands read by default: the teacher `finetune` writes.
DEFAULT_PACKAGE = FinetuneConfig.output_dir


class UsageError(Exception):
    """A bad combination of arguments: the CLI prints its usage and the message, and exits with code 2."""


def require_at_least(args: argparse.Namespace, **minimums: int) -> None:
    """A usage error naming the first integer option below its minimum (e.g. `latency_runs=1`)."""
    for name, minimum in minimums.items():
        value = getattr(args, name)
        if value < minimum:
            raise UsageError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")


def data_from_args(args: argparse.Namespace, *packages: Path) -> ClincData:
    """The --data source (--oos-label, --domains); a bad file, or intents a `packages` one lacks, ends it in one line.

    Without --data: the file the first of `packages` was built from when that is not CLINC150 (the default).
    """
    from compression.data import load_data as load
    from compression.data.splits import DomainsError

    try:
        data = load(built_from(args, *packages), oos_label=args.oos_label, domains_file=args.domains)
    except (ValueError, OSError) as exc:
        prog = getattr(args, "prog", "python -m compression")
        from compression import hub

        option = "--domains" if isinstance(exc, DomainsError) and args.domains is not None else "--data"
        hint = f"; {hub.OFFLINE_HINT}: pass a local data file" if hub.went_offline and option == "--data" else ""
        raise SystemExit(f"{prog}: error: {option}: {exc}{hint}") from None
    check_package_labels(args, data, *packages)
    return data


def built_from(args: argparse.Namespace, *packages: Path) -> str | None:
    """--data, else the data file of your own that the first package records (None: CLINC150, the default)."""
    if args.data is not None or not packages:
        return args.data
    from app.package import PackageError, read_manifest
    from compression.data import is_table
    from compression.data.clinc import CLINC_NAMES

    def recorded_by(package: Path) -> str | None:
        try:
            dataset = read_manifest(package).source.get("dataset")
        except PackageError:
            return None  # the command's own check names what is wrong with the package
        if not isinstance(dataset, str) or Path(dataset).name in CLINC_NAMES:
            return None  # CLINC150, the default
        return dataset

    sources = {str(p): recorded_by(p) for p in packages}
    if len(set(sources.values())) > 1:  # scored on one package's data, the others' figures would mean nothing
        named = ", ".join(f"{p}: {d or 'CLINC150'}" for p, d in sources.items())
        prog = getattr(args, "prog", "python -m compression")
        raise SystemExit(f"{prog}: error: the packages were built from different data ({named}); pass --data")
    recorded = sources[str(packages[0])]
    if recorded is None:
        return None
    if not (is_table(recorded) or Path(recorded).suffix.lower() == ".json"):
        return None  # a dataset name: loading it is the default's business
    if not Path(recorded).is_file():
        prog = getattr(args, "prog", "python -m compression")
        raise SystemExit(
            f"{prog}: error: {packages[0]} was built from {recorded}, which is not there from this folder; "
            f"pass --data with that file"
        )
    logger.info("--data not given: %s, the data %s was built from", recorded, packages[0])
    return recorded


def check_package_labels(args: argparse.Namespace, data: ClincData, *packages: Path) -> None:
    """End the command with one line when --data has intents a package does not know (it was built on other data)."""
    from app.package import PackageError, read_manifest

    prog = getattr(args, "prog", "python -m compression")
    gold = {*data.train.labels, *data.validation.labels, *data.test.labels}
    for package in packages:
        try:
            manifest = read_manifest(package)
        except PackageError:
            continue  # the command's own check names what is wrong with the package
        unknown = sorted(gold - set(manifest.labels))
        if not unknown:
            continue
        hint = f"use a package with the data it was built from (its manifest: {manifest.source.get('dataset')})"
        if data.oos_label in unknown:
            hint += f"; its out-of-scope label is {manifest.oos_label!r}, the data's {data.oos_label!r}"
        raise SystemExit(
            f"{prog}: error: --data {data.source} has {len(unknown)} label(s) that {package} does not know "
            f"({', '.join(repr(u) for u in unknown[:3])}{', ...' if len(unknown) > 3 else ''}); {hint}"
        )


def add_package_arg(p: argparse.ArgumentParser) -> None:
    """--package: the model package folder a command reads."""
    p.add_argument("--package", type=Path, default=DEFAULT_PACKAGE, help="model package folder")


def add_quant_args(p: argparse.ArgumentParser) -> None:
    """The int8 options, with QuantizeConfig's defaults."""
    from compression.quantize import EMBEDDING_BITS, GRAPHS, PRESETS, QuantizeConfig

    p.add_argument(
        "--quant-preset",
        default=QuantizeConfig.preset,
        choices=PRESETS,
        help="ORT int8 preset; auto (default): the one native to this CPU (avx512_vnni with VNNI, avx2 without, arm64)",
    )
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
