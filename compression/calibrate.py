"""Choose the out-of-scope confidence threshold on the validation split (never on test)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.backends.base import load_backend
from app.package import read_manifest, update_manifest
from compression.data import Split
from compression.evaluate import predict_probs, scores

logger = logging.getLogger(__name__)

OBJECTIVES = ("balanced", "accuracy")


@dataclass
class CalibrateConfig:
    """Threshold search settings.

    objective "balanced" maximizes (in-scope accuracy + oos recall) / 2: it does not depend on the
    share of oos queries in the validation split (3% here, 18% in test, unknown in production), so
    a rare-oos validation set cannot talk the threshold down to zero. "accuracy" maximizes plain
    validation accuracy.
    """

    package_dir: Path = Path("artifacts/teacher")
    objective: str = "balanced"
    backend: str = "onnx"
    grid: tuple[float, ...] = tuple(round(x, 2) for x in np.arange(0.0, 1.0, 0.01))
    num_threads: int = 0


def choose_threshold(probs: np.ndarray, gold: list[str], manifest, objective: str, grid) -> tuple[float, dict]:
    """Best threshold on the grid; ties go to the lowest threshold (fewest refusals)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    best_t, best_value, best_scores = 0.0, -1.0, {}
    for t in grid:
        s = scores(probs, gold, manifest, float(t))
        value = (s["in_scope_accuracy"] + s["oos_recall"]) / 2 if objective == "balanced" else s["accuracy"]
        if value > best_value + 1e-12:
            best_t, best_value, best_scores = float(t), value, s
    return best_t, best_scores


def calibrate(cfg: CalibrateConfig, validation: Split) -> float:
    """Write the chosen oos_threshold into the package manifest and return it."""
    manifest = read_manifest(cfg.package_dir)
    backend_name = cfg.backend if cfg.backend in manifest.backends else "torch"
    backend = load_backend(backend_name, cfg.package_dir, cfg.num_threads)
    probs = predict_probs(backend, validation, 64, desc="calibrate")
    threshold, s = choose_threshold(probs, validation.labels, manifest, cfg.objective, cfg.grid)
    source = dict(manifest.source)
    source["calibration"] = {
        "split": "validation",
        "objective": cfg.objective,
        "backend": backend_name,
        "threshold": threshold,
        "validation_scores": s,
    }
    update_manifest(cfg.package_dir, oos_threshold=threshold, source=source)
    logger.info("oos_threshold=%.2f (%s on validation: %s)", threshold, cfg.objective, s)
    return threshold
