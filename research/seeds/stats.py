"""The paired comparison of the two arms: per-seed differences, paired-t intervals and the fixed verdict rule."""

from __future__ import annotations

import math
import statistics
from typing import Any

ARMS = ("kd", "a1")  # a1: the same recipe with alpha = 1 (cross-entropy on the hard labels only)
MIN_SEEDS = 5
MIN_GAIN = 0.005  # the smallest mean gain of the verdict's metric that counts (0.5 points)
# (split, scores key, metric): the rows of the summary; the first one decides the verdict.
METRICS = (
    ("test", "test_argmax", "in_scope_accuracy"),
    ("test", "test", "accuracy"),
    ("test", "test", "in_scope_accuracy"),
    ("test", "test", "oos_recall"),
    ("test", "test", "oos_auroc"),
    ("validation", "validation", "accuracy"),
    ("validation", "validation_argmax", "in_scope_accuracy"),
)
VERDICT_METRIC = "test_argmax.in_scope_accuracy"


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def paired(diffs: list[float], confidence: float) -> dict[str, Any]:
    """Mean, sd and the paired-t interval of per-seed differences; wins / losses / ties."""
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else math.nan
    sd = statistics.stdev(diffs) if n >= 2 else math.nan
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
    return {
        "n": n,
        "diffs": diffs,
        "mean": mean,
        "sd": sd,
        "ci": [mean - half, mean + half],
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
    }


def accuracy_parts(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any] | None:
    """Split each seed's test accuracy difference into its in-scope and oos recall parts.

    Test accuracy is w x in-scope accuracy + (1 - w) x oos recall, w the in-scope share of the test queries, so
    the difference splits exactly into w x (in-scope difference) + (1 - w) x (oos recall difference). The part
    with the larger sd is where the seed-to-seed spread of the verdict's metric comes from. w is read off the
    records themselves; None when they do not agree on one w (or fewer than 2 pairs).
    """
    blocks = [r["test"] for pair in pairs for r in pair]
    weights = [
        (b["accuracy"] - b["oos_recall"]) / (b["in_scope_accuracy"] - b["oos_recall"])
        for b in blocks
        if abs(b["in_scope_accuracy"] - b["oos_recall"]) > 1e-3
    ]
    if len(pairs) < 2 or not weights or max(weights) - min(weights) > 1e-6:
        return None
    w = statistics.fmean(weights)
    parts: dict[str, list[float]] = {"in_scope": [], "oos_recall": []}
    for kd, a1 in pairs:
        parts["in_scope"].append(w * (kd["test"]["in_scope_accuracy"] - a1["test"]["in_scope_accuracy"]))
        parts["oos_recall"].append((1 - w) * (kd["test"]["oos_recall"] - a1["test"]["oos_recall"]))
    return {
        "in_scope_weight": w,
        **{k: {"mean": statistics.fmean(v), "sd": statistics.stdev(v)} for k, v in parts.items()},
    }


def summarize(records: list[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Paired KD - alpha=1 differences per metric over the seeds that have both arms, and the verdict."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in records:
        by_seed.setdefault(int(r["seed"]), {})[r["arm"]] = r
    seeds = sorted(s for s, arms in by_seed.items() if set(ARMS) <= set(arms))
    rows = {}
    for split, key, metric in METRICS:
        if not all(metric in by_seed[s][arm][key] for s in seeds for arm in ARMS):
            continue  # e.g. oos_auroc in records written before it was recorded
        diffs = [by_seed[s]["kd"][key][metric] - by_seed[s]["a1"][key][metric] for s in seeds]
        rows[f"{key}.{metric}"] = {"split": split, **paired(diffs, confidence)}
    main = rows[VERDICT_METRIC]
    what = "the test arg-max in-scope accuracy difference"
    if main["n"] < MIN_SEEDS:
        verdict = f"not enough seeds: {main['n']} paired, the rule needs {MIN_SEEDS}"
    elif main["ci"][0] > 0 and main["mean"] >= MIN_GAIN:
        verdict = f"distillation measurably helps: the interval for {what} is above zero and its mean >= +0.5 pts"
    elif main["ci"][1] < 0:
        verdict = f"distillation measurably hurts: the interval for {what} is below zero"
    elif main["ci"][0] > 0:
        verdict = f"not shown: the interval for {what} is above zero but its mean gain is below +0.5 pts"
    else:
        verdict = f"not shown: the interval for {what} contains zero"
    parts = accuracy_parts([(by_seed[s]["kd"], by_seed[s]["a1"]) for s in seeds])
    return {"seeds": seeds, "confidence": confidence, "metrics": rows, "verdict": verdict, "accuracy_parts": parts}
