"""Choose the out-of-scope rule (score and threshold) on the validation split (never on test)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from app.backends.base import load_backend
from app.decision import OOS_SCORES, OosScore, oos_score
from app.package import read_manifest, update_manifest
from compression.data import Split
from compression.evaluate import scores, split_logits

logger = logging.getLogger(__name__)

OBJECTIVES = ("recall-at-loss", "balanced", "accuracy")


@dataclass
class CalibrateConfig:
    """Oos rule search settings: which scores to try, and the objective that picks the score and its threshold.

    "recall-at-loss" (default) catches as many oos queries as possible while refusing at most
    `max_in_scope_loss` (1 point) more in-scope queries than no threshold does: a product rule
    ("never turn away more than 1% of valid requests") that needs no guess of the oos share of
    traffic. "balanced" maximizes (in-scope accuracy + oos recall) / 2 (prior-free, but with 100 oos
    vs 3,000 in-scope validation queries it trades many in-scope answers for few oos catches);
    "accuracy" maximizes plain validation accuracy (implicitly assumes the validation oos share, 3%).
    Every score in `scores` gets its best threshold; the score with the best objective value wins. Ties go to
    the higher in-scope accuracy (fewer valid requests refused), then to the earlier score, so the plain
    probability is kept unless a logit score does better.
    """

    package_dir: Path = Path("artifacts/teacher")
    objective: str = "recall-at-loss"
    max_in_scope_loss: float = 0.01
    backend: str = "onnx"
    scores: tuple[OosScore, ...] = OOS_SCORES
    grid: tuple[float, ...] = tuple(round(x, 2) for x in np.arange(0.0, 1.0, 0.01))
    num_threads: int = 0


def threshold_grid(logits: np.ndarray, oos_index: int, score: OosScore, msp_grid: Sequence[float]) -> list[float]:
    """Candidate thresholds: `msp_grid` for probabilities; for logit scores, quantiles of the validation scores."""
    if score == "msp":
        return [float(t) for t in msp_grid]
    values = oos_score(logits, oos_index, score)
    # Refusing more than half of the validation queries is never a useful rule; 0.1% steps up to there.
    cuts = np.quantile(values, np.linspace(0.0, 0.5, 501))
    return [float(t) for t in np.unique(np.round(cuts, 3))]


def _objective(objective: str, s: dict, floor: float) -> float:
    if objective == "balanced":
        return (s["in_scope_accuracy"] + s["oos_recall"]) / 2
    if objective == "accuracy":
        return s["accuracy"]
    return s["oos_recall"] if s["in_scope_accuracy"] >= floor - 1e-12 else -1.0


def _search(
    logits: np.ndarray,
    gold: list[str],
    manifest,
    objective: str,
    grid: Sequence[float],
    max_loss: float,
    score: OosScore,
) -> tuple[float, dict, float]:
    """(threshold, its scores, its objective value) for one score; ties go to the lowest threshold."""
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    floor = scores(logits, gold, manifest, -np.inf, score)["in_scope_accuracy"] - max_loss
    best_t, best_value, best_scores = 0.0, -2.0, {}
    for t in grid:
        s = scores(logits, gold, manifest, float(t), score)
        value = _objective(objective, s, floor)
        if value > best_value + 1e-12:
            best_t, best_value, best_scores = float(t), value, s
    return best_t, best_scores, best_value


def choose_threshold(
    logits: np.ndarray,
    gold: list[str],
    manifest,
    objective: str,
    grid: Sequence[float],
    max_in_scope_loss: float = 0.01,
    score: OosScore = "msp",
) -> tuple[float, dict]:
    """Best threshold on the grid for one score; ties go to the lowest threshold (fewest refusals)."""
    t, s, _ = _search(logits, gold, manifest, objective, grid, max_in_scope_loss, score)
    return t, s


def choose_rule(
    logits: np.ndarray, gold: list[str], manifest, cfg: CalibrateConfig
) -> tuple[OosScore, float, dict, dict[str, dict]]:
    """The score and threshold with the best objective value on these (validation) logits, and every candidate."""
    oos_index = manifest.labels.index(manifest.oos_label)
    candidates: dict[str, dict] = {}
    best: tuple[float, float, OosScore] | None = None
    for score in cfg.scores:
        if score not in OOS_SCORES:
            raise ValueError(f"unknown oos score {score!r}; choose from {OOS_SCORES}")
        grid = threshold_grid(logits, oos_index, score, cfg.grid)
        t, s, value = _search(logits, gold, manifest, cfg.objective, grid, cfg.max_in_scope_loss, score)
        candidates[score] = {"threshold": t, "validation_scores": s, "objective_value": value}
        key = (value, s["in_scope_accuracy"])
        if best is None or key[0] > best[0] + 1e-12 or (abs(key[0] - best[0]) <= 1e-12 and key[1] > best[1] + 1e-12):
            best = (*key, score)
    if best is None:
        raise ValueError("no oos score to calibrate; pass at least one of " + ", ".join(OOS_SCORES))
    chosen = best[2]
    return chosen, candidates[chosen]["threshold"], candidates[chosen]["validation_scores"], candidates


def calibrate(cfg: CalibrateConfig, validation: Split) -> float:
    """Write the chosen oos_score and oos_threshold into the package manifest and return the threshold."""
    manifest = read_manifest(cfg.package_dir)
    backend_name = cfg.backend if cfg.backend in manifest.backends else "torch"
    backend = load_backend(backend_name, cfg.package_dir, cfg.num_threads)
    logits = split_logits(backend, validation, 64, desc="calibrate")
    score, threshold, s, candidates = choose_rule(logits, validation.labels, manifest, cfg)
    source = dict(manifest.source)
    source["calibration"] = {
        "split": "validation",
        "objective": cfg.objective,
        "max_in_scope_loss": cfg.max_in_scope_loss,
        "backend": backend_name,
        "score": score,
        "threshold": threshold,
        "validation_scores": s,
        "candidates": candidates,
    }
    update_manifest(cfg.package_dir, oos_score=score, oos_threshold=threshold, source=source)
    logger.info("oos rule: %s < %.3f -> oos (%s on validation: %s)", score, threshold, cfg.objective, s)
    for name, c in candidates.items():
        logger.info("  candidate %-9s threshold %8.3f validation %s", name, c["threshold"], c["validation_scores"])
    return threshold
