"""Export a package's PyTorch weights to ONNX (optimum-onnx) and apply ORT graph optimization."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compression.packaging import check_intact, missing_input, refresh_manifest
from compression.progress import step

logger = logging.getLogger(__name__)


@dataclass
class ExportConfig:
    """ONNX export + ORT optimization settings."""

    package_dir: Path = Path("artifacts/teacher")
    # Level 2 = basic + extended fusions (attention, gelu, layernorm); 99 adds layout changes
    # that ORT applies at session creation anyway, so level 2 is what is worth saving to disk.
    optimization_level: int = 2


def export_raw(package_dir: Path, out_dir: Path) -> Path:
    """Plain ONNX export of the package's classifier (no fusions); returns the .onnx path."""
    from optimum.onnxruntime import ORTModelForSequenceClassification

    if not (Path(package_dir) / "model.safetensors").is_file():
        raise missing_input(package_dir, "model.safetensors", "run `python -m compression finetune` first")
    model = ORTModelForSequenceClassification.from_pretrained(package_dir, export=True)
    model.save_pretrained(out_dir)
    path = Path(out_dir) / "model.onnx"
    if not path.is_file():
        raise RuntimeError(f"optimum did not write {path}")
    return path


def optimize_onnx(raw_dir: Path, out_dir: Path, level: int) -> Path:
    """ORT transformer-specific graph optimization of model.onnx in raw_dir."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import OptimizationConfig

    optimizer = ORTOptimizer.from_pretrained(raw_dir, file_names=["model.onnx"])
    optimizer.optimize(OptimizationConfig(optimization_level=level), save_dir=out_dir)
    return Path(out_dir) / "model_optimized.onnx"


def export(cfg: ExportConfig) -> Path:
    """Write model.onnx (ORT graph-optimized fp32) into the package and re-hash it."""
    package_dir = Path(cfg.package_dir)
    check_intact(package_dir)
    with tempfile.TemporaryDirectory() as tmp:
        raw_dir = Path(tmp) / "raw"
        with step(logger, f"{package_dir}: export to ONNX"):
            export_raw(package_dir, raw_dir)
        with step(logger, f"{package_dir}: ORT graph optimization (level {cfg.optimization_level})"):
            optimized = optimize_onnx(raw_dir, Path(tmp) / "opt", cfg.optimization_level)
        shutil.copyfile(optimized, package_dir / "model.onnx")
    refresh_manifest(package_dir, replaced_backend="onnx")
    logger.info("exported %s/model.onnx (optimization level %d)", package_dir, cfg.optimization_level)
    return package_dir / "model.onnx"
