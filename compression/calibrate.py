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

OBJECTIVES = ("recall-at-loss", "balanced", "accuracy")


@dataclass
class CalibrateConfig:
    """Threshold search settings.

    "recall-at-loss" (default) catches as many oos queries as possible while refusing at most
    `max_in_scope_loss` (1 point) more in-scope queries than no threshold does: a product rule
    ("never turn away more than 1% of valid requests") that needs no guess of the oos share of
    traffic. "balanced" maximizes (in-scope accuracy + oos recall) / 2 (prior-free, but with 100 oos
    vs 3,000 in-scope validation queries it trades many in-scope answers for few oos catches);
    "accuracy" maximizes plain validation accuracy (implicitly assumes the validation oos share, 3%).
    """

    package_dir: Path = Path("artifacts/teacher")
    objective: str = "recall-at-loss"
    max_in_scope_loss: float = 0.01
    backend: str = "onnx"
    grid: tuple[float, ...] = tuple(round(x, 2) for x in np.arange(0.0, 1.0, 0.01))
    num_threads: int = 0


def choose_threshold(
    probs: np.ndarray, gold: list[str], manifest, objective: str, grid, max_in_scope_loss: float = 0.01
) -> tuple[float, dict]:
    """Best threshold on the grid; ties go to the lowest threshold (fewest refusals)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    table = [(float(t), scores(probs, gold, manifest, float(t))) for t in grid]
    floor = scores(probs, gold, manifest, 0.0)["in_scope_accuracy"] - max_in_scope_loss

    def value(s: dict) -> float:
        if objective == "balanced":
            return (s["in_scope_accuracy"] + s["oos_recall"]) / 2
        if objective == "accuracy":
            return s["accuracy"]
        return s["oos_recall"] if s["in_scope_accuracy"] >= floor - 1e-12 else -1.0

    best_t, best_value, best_scores = 0.0, -2.0, {}
    for t, s in table:
        if value(s) > best_value + 1e-12:
            best_t, best_value, best_scores = t, value(s), s
    return best_t, best_scores


def calibrate(cfg: CalibrateConfig, validation: Split) -> float:
    """Write the chosen oos_threshold into the package manifest and return it."""
    manifest = read_manifest(cfg.package_dir)
    backend_name = cfg.backend if cfg.backend in manifest.backends else "torch"
    backend = load_backend(backend_name, cfg.package_dir, cfg.num_threads)
    probs = predict_probs(backend, validation, 64, desc="calibrate")
    threshold, s = choose_threshold(probs, validation.labels, manifest, cfg.objective, cfg.grid, cfg.max_in_scope_loss)
    source = dict(manifest.source)
    source["calibration"] = {
        "split": "validation",
        "objective": cfg.objective,
        "max_in_scope_loss": cfg.max_in_scope_loss,
        "backend": backend_name,
        "threshold": threshold,
        "validation_scores": s,
    }
    update_manifest(cfg.package_dir, oos_threshold=threshold, source=source)
    logger.info("oos_threshold=%.2f (%s on validation: %s)", threshold, cfg.objective, s)
    return threshold
