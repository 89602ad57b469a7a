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
from compression.packaging import drop_metrics

logger = logging.getLogger(__name__)

OBJECTIVES = ("recall-at-loss", "balanced", "accuracy")
# The rule used whatever the objective when validation has no oos query to measure it on.
NO_OOS_OBJECTIVE = "in-scope-budget"


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

    Validation without oos queries (data with no oos examples) measures no objective: every score then gets the
    highest threshold that still refuses at most `max_in_scope_loss` more in-scope queries ("in-scope-budget"),
    and the first score in `scores` is kept, since nothing tells the scores apart.
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
    """(threshold, its scores, its objective value) for one score; ties go to the lowest threshold.

    Without oos queries in `gold`: the highest threshold within the in-scope budget, and objective value 0.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; choose one of {OBJECTIVES}")
    floor = scores(logits, gold, manifest, -np.inf, score)["in_scope_accuracy"] - max_loss
    if manifest.oos_label not in gold:
        return _budget_threshold(logits, gold, manifest, grid, floor, score)
    best_t, best_value, best_scores = 0.0, -2.0, {}
    for t in grid:
        s = scores(logits, gold, manifest, float(t), score)
        value = _objective(objective, s, floor)
        if value > best_value + 1e-12:
            best_t, best_value, best_scores = float(t), value, s
    return best_t, best_scores, best_value


def _budget_threshold(
    logits: np.ndarray, gold: list[str], manifest, grid: Sequence[float], floor: float, score: OosScore
) -> tuple[float, dict, float]:
    """The highest grid threshold whose in-scope accuracy stays at or above `floor` (the lowest refuses nothing)."""
    # In-scope accuracy only falls as the threshold rises, so the last threshold that keeps the floor is the answer.
    best_t = float(min(grid))
    best_scores = scores(logits, gold, manifest, best_t, score)
    for t in sorted(grid):
        s = scores(logits, gold, manifest, float(t), score)
        if s["in_scope_accuracy"] < floor - 1e-12:
            break
        best_t, best_scores = float(t), s
    return best_t, best_scores, 0.0


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
    has_oos = manifest.oos_label in gold
    if not has_oos:
        logger.warning(
            "validation has no %r queries, so the %s objective cannot be measured: each score gets the highest "
            "threshold that refuses at most %.1f%% more in-scope queries (%s), and the first score is kept",
            manifest.oos_label,
            cfg.objective,
            100 * cfg.max_in_scope_loss,
            NO_OOS_OBJECTIVE,
        )
    candidates: dict[str, dict] = {}
    best: tuple[float, float, OosScore] | None = None
    for score in cfg.scores:
        if score not in OOS_SCORES:
            raise ValueError(f"unknown oos score {score!r}; choose from {OOS_SCORES}")
        grid = threshold_grid(logits, oos_index, score, cfg.grid)
        t, s, value = _search(logits, gold, manifest, cfg.objective, grid, cfg.max_in_scope_loss, score)
        candidates[score] = {"threshold": t, "validation_scores": s, "objective_value": value}
        key = (value, s["in_scope_accuracy"])
        if not has_oos:
            key = (0.0, 0.0)  # nothing tells the scores apart: the first one is kept
        if best is None or key[0] > best[0] + 1e-12 or (abs(key[0] - best[0]) <= 1e-12 and key[1] > best[1] + 1e-12):
            best = (*key, score)
    if best is None:
        raise ValueError("no oos score to calibrate; pass at least one of " + ", ".join(OOS_SCORES))
    chosen = best[2]
    return chosen, candidates[chosen]["threshold"], candidates[chosen]["validation_scores"], candidates


def calibrate(cfg: CalibrateConfig, validation: Split) -> float:
    """Write the chosen oos_score and oos_threshold into the package manifest and return the threshold."""
    manifest = read_manifest(cfg.package_dir)
    # The configured backend, else torch (the fp32 logits), else what the package has (a shipped onnx-int8 folder).
    prefer = (cfg.backend, "torch", *manifest.backends)
    backend_name = next((b for b in prefer if b in manifest.backends), cfg.backend)
    backend = load_backend(backend_name, cfg.package_dir, cfg.num_threads)
    logits = split_logits(backend, validation, 64, desc="calibrate")
    score, threshold, s, candidates = choose_rule(logits, validation.labels, manifest, cfg)
    source = dict(manifest.source)
    has_oos = manifest.oos_label in validation.labels
    source["calibration"] = {
        "split": "validation",
        "objective": cfg.objective if has_oos else NO_OOS_OBJECTIVE,
        "validation_oos_queries": validation.labels.count(manifest.oos_label),
        "max_in_scope_loss": cfg.max_in_scope_loss,
        "backend": backend_name,
        "score": score,
        "threshold": threshold,
        "validation_scores": s,
        "candidates": candidates,
    }
    if (score, threshold) != (manifest.oos_score, manifest.oos_threshold):  # every backend's figures used the old rule
        drop_metrics(manifest, cfg.package_dir)
    update_manifest(cfg.package_dir, oos_score=score, oos_threshold=threshold, source=source, metrics=manifest.metrics)
    objective = source["calibration"]["objective"]
    logger.info("oos rule: %s < %.3f -> oos (%s on validation: %s)", score, threshold, objective, s)
    for name, c in candidates.items():
        logger.info("  candidate %-9s threshold %8.3f validation %s", name, c["threshold"], c["validation_scores"])
    return threshold
