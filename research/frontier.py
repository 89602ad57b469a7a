"""How far an accuracy target is from *any* oos threshold: the in-scope / oos-recall frontier of a package.

Calibration picks one threshold on validation. When a package misses an in-scope accuracy target on test,
the question is whether a better threshold could have met it (a calibration gap) or whether no threshold
can (a model gap). For each oos score this module finds, exactly, the highest oos recall reachable while
in-scope accuracy stays at or above a floor, and the highest overall accuracy reachable while both in-scope
accuracy and oos recall stay at or above their floors, by scanning every distinct threshold of that split. Run on
test it is an oracle: a diagnostic for reports, never a way to choose a rule (`compression calibrate`
chooses on validation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.backends.base import load_backend
from app.decision import OOS_SCORES, OosScore, oos_score
from app.package import Manifest, read_manifest
from compression.data import Split
from compression.evaluate import scores, split_logits

logger = logging.getLogger(__name__)


@dataclass
class FrontierConfig:
    """Packages to probe, on which splits and backend, and the in-scope floors the frontier is read at."""

    packages: tuple[Path, ...] = (Path("artifacts/student"),)
    splits: tuple[str, ...] = ("test",)
    backend: str = "onnx-int8"
    # Several floors compare packages at matched in-scope accuracy: one package may catch more oos near its
    # arg-max ceiling and fewer lower down, so a single operating point can rank two packages either way.
    min_in_scope: tuple[float, ...] = (0.95,)
    min_oos_recall: float = 0.70
    scores: tuple[OosScore, ...] = OOS_SCORES
    num_threads: int = 0


@dataclass
class FrontierPoint:
    """The best oos recall with in-scope accuracy >= the floor, for one score; None where unreachable."""

    score: str
    oos_recall: float | None
    in_scope_accuracy: float | None
    threshold: float | None
    accuracy: float | None = None  # overall: in-scope queries answered right and oos queries refused


@dataclass
class FrontierRow:
    """One package on one split at one floor: its arg-max ceiling, its own rule's figures, the frontier per score."""

    package: str
    backend: str
    split: str
    floor: float
    argmax_in_scope: float
    rule: dict[str, float]
    rule_name: str
    points: list[FrontierPoint] = field(default_factory=list)
    # Per score, the best overall accuracy with in-scope >= the floor and oos recall >= the config's target.
    accuracy_points: list[FrontierPoint] = field(default_factory=list)


@dataclass
class _Sweep:
    """Every cut of one score on one split: refusing the k lowest-scoring answered queries, k = 0..n."""

    thresholds: np.ndarray
    valid: np.ndarray  # a threshold exists that refuses exactly those k (no tie straddles the cut)
    in_scope: np.ndarray
    recall: np.ndarray
    n_in: int
    n_oos: int
    last: float  # the highest score (the cut that refuses every answered query sits above it)


def _sweep(logits: np.ndarray, gold: list[str], manifest: Manifest, score: OosScore) -> _Sweep:
    """In-scope accuracy and oos recall at every distinct threshold of `score`."""
    oos = manifest.labels.index(manifest.oos_label)
    return sweep_evidence(logits, gold, manifest, oos_score(logits, oos, score))


def sweep_evidence(logits: np.ndarray, gold: list[str], manifest: Manifest, in_scope_evidence: np.ndarray) -> _Sweep:
    """In-scope accuracy and oos recall at every distinct threshold of any per-query score (higher = in scope)."""
    # A query is refused when its arg-max is the oos label (no threshold changes that) or its score is under
    # the threshold. Raising the threshold refuses the lowest-scoring answered queries first, so in-scope
    # accuracy can only fall and oos recall only rise. Cuts fall only between distinct score values, as the
    # service's `<` rule does.
    label2id = {label: i for i, label in enumerate(manifest.labels)}
    oos = label2id[manifest.oos_label]
    y = np.asarray([label2id[g] for g in gold])
    best = logits.argmax(axis=-1)
    is_oos = y == oos
    n_in, n_oos = int((~is_oos).sum()), int(is_oos.sum())
    if n_in == 0 or n_oos == 0:
        raise ValueError("the split needs both in-scope and oos queries to trace a frontier")
    answered = best != oos
    evidence = np.asarray(in_scope_evidence, dtype=np.float64)[answered]
    order = np.argsort(evidence, kind="stable")
    ev = evidence[order]
    correct = ((best == y) & ~is_oos)[answered][order]
    caught = is_oos[answered][order]
    lost = np.concatenate([[0], np.cumsum(correct)])
    gained = np.concatenate([[0], np.cumsum(caught)])
    n = len(ev)
    # Threshold that refuses exactly the k lowest: ev[k] (rows < ev[k]); valid only where ev[k-1] < ev[k].
    thresholds = np.concatenate([[-np.inf], ev[1:], [np.inf]]) if n else np.array([-np.inf])
    valid = np.ones(n + 1, dtype=bool)
    if n:
        valid[1:n] = ev[:-1] < ev[1:]
    in_scope = (int(correct.sum()) - lost) / n_in
    recall = ((~answered & is_oos).sum() + gained) / n_oos
    return _Sweep(thresholds, valid, in_scope, recall, n_in, n_oos, float(ev[-1]) if n else 0.0)


def _point(sw: _Sweep, k: int, score: str) -> FrontierPoint:
    """The figures of cut k, with the threshold the service's rule needs to make it."""
    threshold = float(sw.thresholds[k]) if k < len(sw.thresholds) - 1 else sw.last + 1.0
    accuracy = (sw.in_scope[k] * sw.n_in + sw.recall[k] * sw.n_oos) / (sw.n_in + sw.n_oos)
    return FrontierPoint(score, float(sw.recall[k]), float(sw.in_scope[k]), threshold, float(accuracy))


def best_recall_at(
    logits: np.ndarray, gold: list[str], manifest: Manifest, min_in_scope: float, score: OosScore
) -> FrontierPoint:
    """Exact maximum oos recall over all thresholds of `score` that keep in-scope accuracy >= `min_in_scope`."""
    sw = _sweep(logits, gold, manifest, score)
    ok = sw.valid & (sw.in_scope >= min_in_scope - 1e-12)
    if not ok.any():
        return FrontierPoint(score, None, None, None)
    return _point(sw, int(np.flatnonzero(ok).max()), score)  # recall is non-decreasing in k


def best_accuracy_at(
    logits: np.ndarray,
    gold: list[str],
    manifest: Manifest,
    min_in_scope: float,
    min_oos_recall: float,
    score: OosScore,
) -> FrontierPoint:
    """Exact maximum overall accuracy over thresholds of `score` meeting both the in-scope and oos recall floors."""
    # Accuracy is not monotone in the threshold (each cut trades answers for catches), so every cut is checked.
    sw = _sweep(logits, gold, manifest, score)
    ok = sw.valid & (sw.in_scope >= min_in_scope - 1e-12) & (sw.recall >= min_oos_recall - 1e-12)
    if not ok.any():
        return FrontierPoint(score, None, None, None)
    accuracy = sw.in_scope * sw.n_in + sw.recall * sw.n_oos
    k = int(np.flatnonzero(ok)[np.argmax(accuracy[ok])])
    return _point(sw, k, score)


def frontier_rows(
    logits: np.ndarray, split: Split, manifest: Manifest, cfg: FrontierConfig, backend: str, split_name: str
) -> list[FrontierRow]:
    """The frontier of one package's logits on one split, one row per in-scope floor."""
    oos = manifest.labels.index(manifest.oos_label)
    y = np.asarray([manifest.labels.index(g) for g in split.labels])
    in_scope = y != oos
    argmax_in_scope = float((logits.argmax(axis=-1)[in_scope] == y[in_scope]).mean())
    rule = scores(logits, split.labels, manifest, manifest.oos_threshold)
    rule_name = f"{manifest.oos_score} < {manifest.oos_threshold:.3f}"
    rows = []
    for floor in cfg.min_in_scope:
        points = [best_recall_at(logits, split.labels, manifest, floor, s) for s in cfg.scores]
        best = [best_accuracy_at(logits, split.labels, manifest, floor, cfg.min_oos_recall, s) for s in cfg.scores]
        rows.append(
            FrontierRow(manifest.name, backend, split_name, floor, argmax_in_scope, rule, rule_name, points, best)
        )
    return rows


def run_frontier(cfg: FrontierConfig, splits: dict[str, Split]) -> list[FrontierRow]:
    """Logits of every package on each named split through the configured backend, and their frontiers."""
    bad = [f for f in cfg.min_in_scope if not 0.0 < f <= 1.0]
    if bad or not cfg.min_in_scope:
        raise ValueError(f"every min_in_scope floor must be in (0, 1], got {list(cfg.min_in_scope)}")
    unknown = [s for s in cfg.scores if s not in OOS_SCORES]
    if unknown or not cfg.scores:
        raise ValueError(f"unknown oos scores {unknown or 'none given'}; choose from {OOS_SCORES}")
    missing = [name for name in cfg.splits if name not in splits]
    if missing:
        raise ValueError(f"no split named {missing}; have {sorted(splits)}")
    rows = []
    for package in cfg.packages:
        manifest = read_manifest(package)
        if cfg.backend not in manifest.backends:
            raise ValueError(f"{package} has no {cfg.backend!r} backend (it has {manifest.backends})")
        backend = load_backend(cfg.backend, package, cfg.num_threads)
        for name in cfg.splits:
            logits = split_logits(backend, splits[name], 64, desc=f"{manifest.name} {name}")
            rows += frontier_rows(logits, splits[name], manifest, cfg, cfg.backend, name)
            logger.info("%s: arg-max in-scope %.4f on %s", manifest.name, rows[-1].argmax_in_scope, name)
    return rows


def format_frontier(rows: list[FrontierRow], cfg: FrontierConfig) -> str:
    """A Markdown table: ceiling, own rule, and per score the best oos recall at each row's in-scope floor."""
    target = cfg.min_oos_recall
    head = ["package", "backend", "split", "arg-max in-scope", "own rule", "rule in-scope", "rule oos recall"]
    head += ["in-scope floor"] + [f"best oos recall at the floor ({s})" for s in cfg.scores]
    head += [f"floor and oos recall >= {target:g} reachable", "best accuracy there (score)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.package, r.backend, r.split, f"{r.argmax_in_scope:.4f}", r.rule_name]
        cells += [f"{r.rule['in_scope_accuracy']:.4f}", f"{r.rule['oos_recall']:.3f}", f"{r.floor:g}"]
        cells += ["unreachable" if p.oos_recall is None else f"{p.oos_recall:.3f}" for p in r.points]
        reachable = any(p.oos_recall is not None and p.oos_recall >= target - 1e-12 for p in r.points)
        cells.append("yes" if reachable else "no")
        found = [p for p in r.accuracy_points if p.accuracy is not None]
        top = max(found, key=lambda p: p.accuracy or 0.0) if found else None
        cells.append(f"{top.accuracy:.4f} ({top.score})" if top else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
