"""ORT dynamic int8 quantization of a package's ONNX graph (optionally 4-bit word embeddings)."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.cpu import int8_preset
from app.package import read_manifest, write_manifest
from compression.export import export_raw
from compression.packaging import check_intact, drop_metrics, missing_input
from compression.progress import step

logger = logging.getLogger(__name__)

# "auto": the preset whose kernels are exact on the CPU that quantizes (app.cpu.int8_preset), recorded resolved.
PRESETS = ("auto", "avx512_vnni", "avx2", "arm64")
EMBEDDING_BITS = (8, 4)
GRAPHS = ("fused", "plain")
# INT4 tensors (GatherBlockQuantized's table) need opset 21 and IR version 10.
INT4_OPSET, INT4_IR_VERSION = 21, 10


@dataclass
class QuantizeConfig:
    """Dynamic (weights int8, activations quantized at run time) quantization settings."""

    package_dir: Path = Path("artifacts/teacher")
    # "auto": the preset native to the CPU that quantizes: int8 weights (avx512_vnni) on x86 with VNNI, uint8
    # (avx2) without, where int8 kernels saturate (the onnx-int8 backend has ORT compute int8 weights exactly
    # there too, as uint8: app.backends.onnx).
    preset: str = "auto"
    # One scale per output column instead of one per matrix: on all six trained packages it halved the
    # validation decisions that differ from the fp32 graph (docs/experiments.md), for 3-12% more latency.
    per_channel: bool = True
    # The word-embedding table is half of a small BERT's int8 file (30522 x 384). At 4 bits (block-wise
    # scales, ORT's GatherBlockQuantized) it shrinks ~1.7x; it is a lookup, so it costs no matrix math.
    embedding_bits: int = 8
    embedding_block_size: int = 32
    # "fused": quantize the package's model.onnx, whose attention, skip-layernorm and bias-gelu ORT has
    # already fused, so int8 runs as QAttention + fused kernels (single-query p50 9-30% lower than
    # "plain" on six MiniLM-sized packages, docs/experiments.md). "plain": the unfused export (the earlier default).
    graph: str = "fused"

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ValueError(f"unknown quantization preset {self.preset!r}; choose one of {PRESETS}")
        if self.graph not in GRAPHS:
            raise ValueError(f"unknown graph {self.graph!r} to quantize; choose one of {GRAPHS}")
        if self.embedding_bits not in EMBEDDING_BITS:
            raise ValueError(f"embedding_bits must be one of {EMBEDDING_BITS}, got {self.embedding_bits}")
        size = self.embedding_block_size
        if size < 16 or size & (size - 1):
            raise ValueError(f"embedding_block_size must be a power of two >= 16, got {size}")


def word_embedding_gather(model: Any, vocab_size: int) -> str:
    """Name of the one Gather node that reads a constant (vocab_size x hidden) table: the word embeddings."""
    tables = {init.name for init in model.graph.initializer if len(init.dims) == 2 and init.dims[0] == vocab_size}
    gathers = [n.name for n in model.graph.node if n.op_type == "Gather" and n.input[0] in tables]
    if len(gathers) != 1:
        raise ValueError(f"expected one Gather over a {vocab_size}-row table (the word embeddings), found {gathers}")
    return gathers[0]


def upgrade_for_int4(model: Any) -> Any:
    """The model at opset 21 / IR 10 through ONNX's version converter, checked.

    ORT's 4-bit quantizer otherwise only overwrites the opset number ("the generated model may not be a valid
    model"); the converter adapts each default-domain op, and the ORT contrib ops are left as they are.
    """
    import onnx
    from onnx import version_converter

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if opset < INT4_OPSET:
        shapes = list(model.graph.value_info)
        model = version_converter.convert_version(model, INT4_OPSET)
        # The converter also stores every inferred shape (~80 bytes each), which the file does not need.
        del model.graph.value_info[:]
        model.graph.value_info.extend(shapes)
    model.ir_version = max(model.ir_version, INT4_IR_VERSION)
    onnx.checker.check_model(model)
    return model


def quantize_embedding_4bit(path: Path, node_name: str, block_size: int) -> None:
    """Rewrite one Gather in place as a 4-bit GatherBlockQuantized (symmetric, scales per block of a row)."""
    import numpy as np
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import (
        DefaultWeightOnlyQuantConfig,
        MatMulNBitsQuantizer,
    )

    model = upgrade_for_int4(onnx.load(path))
    others = [n.name for n in model.graph.node if n.op_type == "Gather" and n.name != node_name]
    config = DefaultWeightOnlyQuantConfig(
        block_size=block_size, is_symmetric=True, op_types_to_quantize=("Gather",), quant_axes=(("Gather", 1),)
    )
    quantizer = MatMulNBitsQuantizer(model, algo_config=config, nodes_to_exclude=others)
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero block (e.g. [PAD]) has scale 0 -> 0
        quantizer.process()
    if not any(n.op_type == "GatherBlockQuantized" for n in quantizer.model.model.graph.node):
        raise RuntimeError(f"4-bit embedding quantization left {node_name} unchanged")
    quantizer.model.save_model_to_file(str(path), use_external_data_format=False)


def fused_source(package_dir: Path, out_dir: Path) -> Path:
    """The package's fused fp32 model.onnx with every tensor type inferred, ready for the int8 quantizer."""
    # ONNX's own shape inference stops at ORT's contrib ops (Attention, SkipLayerNormalization), so the
    # quantizer would not know the type of the MatMul outputs after them; ORT's symbolic shape inference
    # knows those ops.
    import onnx
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    fused = Path(package_dir) / "model.onnx"
    if not fused.is_file():
        raise missing_input(
            package_dir,
            "model.onnx",
            f"run `python -m compression export --package {package_dir}` first "
            "(or quantize the unfused export with --quant-graph plain)",
        )
    model = SymbolicShapeInference.infer_shapes(onnx.load(fused), auto_merge=True)
    out_dir.mkdir(parents=True)
    shutil.copyfile(Path(package_dir) / "config.json", out_dir / "config.json")
    onnx.save(model, out_dir / "model.onnx")
    return out_dir / "model.onnx"


def quantize(cfg: QuantizeConfig) -> Path:
    """Write model_quantized.onnx into the package, from the fused graph (default) or the plain export."""
    import onnx
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    package_dir = Path(cfg.package_dir)
    check_intact(package_dir)
    preset = int8_preset() if cfg.preset == "auto" else cfg.preset
    with tempfile.TemporaryDirectory() as tmp:
        src_dir = Path(tmp) / "src"
        with step(logger, f"{package_dir}: the {cfg.graph} fp32 graph to quantize"):
            if cfg.graph == "fused":
                fused_source(package_dir, src_dir)
            else:
                export_raw(package_dir, src_dir)
        exclude = []
        if cfg.embedding_bits == 4:  # keep the table fp32 through the int8 pass, then make it 4-bit
            vocab_size = json.loads((package_dir / "config.json").read_text())["vocab_size"]
            exclude = [word_embedding_gather(onnx.load(src_dir / "model.onnx", load_external_data=False), vocab_size)]
        qconfig = getattr(AutoQuantizationConfig, preset)(
            is_static=False, per_channel=cfg.per_channel, nodes_to_exclude=exclude
        )
        with step(logger, f"{package_dir}: ORT dynamic int8 ({preset})"):
            quantizer = ORTQuantizer.from_pretrained(src_dir, file_name="model.onnx")
            quantizer.quantize(quantization_config=qconfig, save_dir=Path(tmp) / "q")
        out = Path(tmp) / "q" / "model_quantized.onnx"
        if exclude:
            with step(logger, f"{package_dir}: 4-bit word embeddings"):
                quantize_embedding_4bit(out, exclude[0], cfg.embedding_block_size)
        shutil.copyfile(out, package_dir / "model_quantized.onnx")
    manifest = read_manifest(package_dir)
    drop_metrics(manifest, package_dir, "onnx-int8")
    manifest.source["quantization"] = {
        "method": "ORT dynamic int8",
        "graph": cfg.graph,
        "preset": preset,
        "per_channel": cfg.per_channel,
        "embedding_bits": cfg.embedding_bits,
        **({"embedding_block_size": cfg.embedding_block_size} if cfg.embedding_bits == 4 else {}),
    }
    write_manifest(package_dir, manifest)
    logger.info(
        "quantized %s/model_quantized.onnx (%s graph, %s, per_channel=%s, embedding %d-bit)",
        package_dir,
        cfg.graph,
        preset,
        cfg.per_channel,
        cfg.embedding_bits,
    )
    return package_dir / "model_quantized.onnx"
