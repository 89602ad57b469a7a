"""ORT dynamic int8 quantization of a package's ONNX graph."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compression.export import export_raw
from compression.packaging import refresh_manifest

logger = logging.getLogger(__name__)

PRESETS = ("avx512_vnni", "avx2", "arm64")


@dataclass
class QuantizeConfig:
    """Dynamic (weights int8, activations quantized at run time) quantization settings."""

    package_dir: Path = Path("artifacts/teacher")
    preset: str = "avx512_vnni"
    per_channel: bool = False


def quantize(cfg: QuantizeConfig) -> Path:
    """Write model_quantized.onnx into the package.

    Quantizes the *unfused* export: quantizing the fused graph trips ORT's shape inference on
    the fused Attention ops, and ORT re-applies its fusions around the int8 MatMuls at load.
    """
    from optimum.onnxruntime import ORTQuantizer
    from optimum.onnxruntime.configuration import AutoQuantizationConfig

    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown quantization preset {cfg.preset!r}; choose one of {PRESETS}")
    package_dir = Path(cfg.package_dir)
    qconfig = getattr(AutoQuantizationConfig, cfg.preset)(is_static=False, per_channel=cfg.per_channel)
    with tempfile.TemporaryDirectory() as tmp:
        raw_dir = Path(tmp) / "raw"
        export_raw(package_dir, raw_dir)
        quantizer = ORTQuantizer.from_pretrained(raw_dir, file_name="model.onnx")
        quantizer.quantize(quantization_config=qconfig, save_dir=Path(tmp) / "q")
        shutil.copyfile(Path(tmp) / "q" / "model_quantized.onnx", package_dir / "model_quantized.onnx")
    refresh_manifest(package_dir)
    logger.info("quantized %s/model_quantized.onnx (%s, per_channel=%s)", package_dir, cfg.preset, cfg.per_channel)
    return package_dir / "model_quantized.onnx"
