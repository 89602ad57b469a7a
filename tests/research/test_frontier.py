"""The in-scope / oos-recall frontier: exact against a brute-force threshold scan, by hand, and through the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.base import load_backend
from app.decision import OOS_SCORES, oos_score
from app.package import Manifest, read_manifest
from compression.data import load_clinc
from compression.evaluate import scores
from research.cli import main
from research.frontier import (
    FrontierConfig,
    best_accuracy_at,
    best_recall_at,
    format_frontier,
    frontier_rows,
    run_frontier,
)

MANIFEST = Manifest(name="m", labels=["a", "b", "oos"])


def probs(rows: list[list[float]]) -> np.ndarray:
    """Logits whose softmax is exactly these probability rows."""
    return np.log(np.asarray(rows, dtype=np.float64)).astype(np.float32)


def spread(c: float) -> list[float]:
    """Arg-max "a" with probability c, the rest split evenly."""
    return [c, (1 - c) / 2, (1 - c) / 2]


# Five in-scope queries (gold "a"): four right (msp 0.9, 0.8, 0.6, 0.5), one answered "b" (0.55).
# Four oos queries: three answered "a" (0.7, 0.52, 0.45), one refused by its arg-max (the oos label).
HAND_ROWS = [spread(0.9), spread(0.8), spread(0.6), spread(0.5), [0.225, 0.55, 0.225]]
HAND_ROWS += [spread(0.7), spread(0.52), spread(0.45), [0.1, 0.1, 0.8]]
HAND_GOLD = ["a"] * 5 + ["oos"] * 4


@pytest.mark.parametrize(
    ("floor", "recall", "in_scope", "threshold"),
    [
        (0.8, 0.5, 0.8, 0.5),  # refuse only the 0.45 oos query: the arg-max one plus it
        (0.6, 0.75, 0.6, 0.6),  # give up the right 0.5 answer: 0.45, 0.5, 0.52, 0.55 refused
        (0.4, 1.0, 0.4, 0.8),  # give up 0.6 too, which reaches the 0.7 oos query
    ],
)
def test_best_recall_by_hand(floor: float, recall: float, in_scope: float, threshold: float) -> None:
    p = best_recall_at(probs(HAND_ROWS), HAND_GOLD, MANIFEST, floor, "msp")
    assert p.oos_recall == pytest.approx(recall)
    assert p.in_scope_accuracy == pytest.approx(in_scope)
    assert p.threshold == pytest.approx(threshold, abs=1e-6)


@pytest.mark.parametrize(
    ("floor", "min_recall", "accuracy", "threshold"),
    [
        # Refusing 0.45 gives 4 right + 2 caught; refusing up to 0.52 or 0.55 ties it; the first cut is returned.
        (0.6, 0.5, 6 / 9, 0.5),
        (0.6, 0.75, 6 / 9, 0.55),  # recall 0.75 needs 0.52 refused, which costs the right 0.5 answer
        (0.4, 1.0, 6 / 9, 0.8),  # all four oos: 0.6 and 0.5 given up
        (0.8, 0.75, None, None),  # at in-scope 0.8 at most two oos queries are caught
    ],
)
def test_best_accuracy_by_hand(
    floor: float, min_recall: float, accuracy: float | None, threshold: float | None
) -> None:
    p = best_accuracy_at(probs(HAND_ROWS), HAND_GOLD, MANIFEST, floor, min_recall, "msp")
    if accuracy is None:
        assert (p.accuracy, p.oos_recall, p.threshold) == (None, None, None)
        return
    assert p.accuracy == pytest.approx(accuracy)
    assert p.threshold == pytest.approx(threshold, abs=1e-6)
    assert p.in_scope_accuracy >= floor
    assert p.oos_recall >= min_recall


def test_floor_above_the_argmax_ceiling_is_unreachable() -> None:
    p = best_recall_at(probs(HAND_ROWS), HAND_GOLD, MANIFEST, 0.81, "msp")  # arg-max in-scope is 0.8
    assert (p.oos_recall, p.in_scope_accuracy, p.threshold) == (None, None, None)


def test_a_split_without_oos_queries_is_refused() -> None:
    with pytest.raises(ValueError, match="both in-scope and oos"):
        best_recall_at(probs(HAND_ROWS[:5]), HAND_GOLD[:5], MANIFEST, 0.5, "msp")


@pytest.mark.parametrize("score", OOS_SCORES)
@pytest.mark.parametrize("floor", [0.0, 0.5, 0.6, 0.7])
def test_best_recall_matches_a_brute_force_scan(score: str, floor: float) -> None:
    rng = np.random.default_rng(7)
    gold_ids = rng.integers(0, 3, 400)
    # Noisy logits pointing at the gold label, rounded so that many rows tie on every score.
    logits = np.round(rng.normal(0.0, 1.0, (400, 3)) + 1.5 * np.eye(3)[gold_ids], 1).astype(np.float32)
    gold = [MANIFEST.labels[i] for i in gold_ids]
    values = oos_score(logits, 2, score)  # type: ignore[arg-type]
    candidates = [-np.inf, *np.unique(values).tolist(), float(values.max()) + 1.0]
    best = None
    for t in candidates:
        s = scores(logits, gold, MANIFEST, float(t), score)  # type: ignore[arg-type]
        if s["in_scope_accuracy"] >= floor and (best is None or s["oos_recall"] > best["oos_recall"]):
            best = s
    p = best_recall_at(logits, gold, MANIFEST, floor, score)  # type: ignore[arg-type]
    if best is None:
        assert p.oos_recall is None
        return
    assert p.oos_recall == pytest.approx(best["oos_recall"])
    assert p.oos_recall > 0  # the scan must have something to find
    # The returned threshold, fed to the service's own rule, gives the returned figures.
    again = scores(logits, gold, MANIFEST, p.threshold, score)  # type: ignore[arg-type]
    assert again["oos_recall"] == pytest.approx(p.oos_recall)
    assert again["in_scope_accuracy"] == pytest.approx(p.in_scope_accuracy)
    assert p.in_scope_accuracy >= floor
    assert p.accuracy == pytest.approx(again["accuracy"])


@pytest.mark.parametrize("score", OOS_SCORES)
@pytest.mark.parametrize(("floor", "min_recall"), [(0.0, 0.0), (0.5, 0.3), (0.6, 0.2), (0.4, 0.6)])
def test_best_accuracy_matches_a_brute_force_scan(score: str, floor: float, min_recall: float) -> None:
    rng = np.random.default_rng(11)
    gold_ids = rng.integers(0, 3, 400)
    logits = np.round(rng.normal(0.0, 1.0, (400, 3)) + 1.5 * np.eye(3)[gold_ids], 1).astype(np.float32)
    gold = [MANIFEST.labels[i] for i in gold_ids]
    values = oos_score(logits, 2, score)  # type: ignore[arg-type]
    best = None
    for t in [-np.inf, *np.unique(values).tolist(), float(values.max()) + 1.0]:
        s = scores(logits, gold, MANIFEST, float(t), score)  # type: ignore[arg-type]
        meets = s["in_scope_accuracy"] >= floor and s["oos_recall"] >= min_recall
        if meets and (best is None or s["accuracy"] > best["accuracy"]):
            best = s
    p = best_accuracy_at(logits, gold, MANIFEST, floor, min_recall, score)  # type: ignore[arg-type]
    assert best is not None  # every case here is reachable; the hand test covers the unreachable one
    assert p.accuracy == pytest.approx(best["accuracy"])
    again = scores(logits, gold, MANIFEST, p.threshold, score)  # type: ignore[arg-type]
    assert again["accuracy"] == pytest.approx(p.accuracy)
    assert again["in_scope_accuracy"] >= floor
    assert again["oos_recall"] >= min_recall


def test_table_has_one_row_per_floor_and_marks_reachable_targets() -> None:
    from compression.data import Split

    split = Split([str(i) for i in range(len(HAND_GOLD))], HAND_GOLD)
    manifest = Manifest(name="hand", labels=["a", "b", "oos"], oos_score="msp", oos_threshold=0.5)
    logits = probs(HAND_ROWS)
    cfg = FrontierConfig(min_in_scope=(0.9, 0.6, 0.4), min_oos_recall=0.7, scores=("msp",))
    rows = frontier_rows(logits, split, manifest, cfg, "onnx", "test")
    assert [r.floor for r in rows] == [0.9, 0.6, 0.4]
    assert all(r.argmax_in_scope == pytest.approx(0.8) for r in rows)
    assert all(r.rule == scores(logits, HAND_GOLD, manifest, 0.5) for r in rows)
    # Each row's point is the hand-computed best at its own floor (see test_best_recall_by_hand).
    assert [r.points[0].oos_recall for r in rows] == [None, pytest.approx(0.75), pytest.approx(1.0)]
    table = format_frontier(rows, cfg).splitlines()
    assert "in-scope floor" in table[0]
    assert "best oos recall at the floor (msp)" in table[0]
    assert len(table) == 2 + 3
    assert table[2].endswith("| 0.9 | unreachable | no | – |")
    assert table[3].endswith("| 0.6 | 0.750 | yes | 0.6667 (msp) |")
    assert table[4].endswith("| 0.4 | 1.000 | yes | 0.6667 (msp) |")


@pytest.mark.parametrize("floors", [(), (0.9, 0.0), (1.2,)])
def test_run_frontier_refuses_floors_outside_0_1(floors: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="min_in_scope"):
        run_frontier(FrontierConfig(min_in_scope=floors), {})


def test_cli_frontier_on_the_tiny_package(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "frontier.md"
    args = ["--data", str(clinc_json), "frontier", str(tiny_package), "--backend", "onnx", "--output", str(out)]
    assert main([*args, "--min-in-scope", "0.5", "0.3", "--splits", "test", "validation"]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 6  # header, rule, one row per split and floor
    assert [line.split("|")[3].strip() for line in lines[2:]] == ["test", "test", "validation", "validation"]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header[:8] == [
        "package",
        "backend",
        "split",
        "arg-max in-scope",
        "own rule",
        "rule in-scope",
        "rule oos recall",
        "in-scope floor",
    ]
    assert len(cells) == len(header) == 13
    # The rule columns are the evaluation's figures for the same backend and split.
    manifest = read_manifest(tiny_package)
    test = load_clinc(str(clinc_json)).test
    logits = load_backend("onnx", tiny_package).predict_logits(test.texts)
    s = scores(logits, test.labels, manifest, manifest.oos_threshold)
    assert cells[:3] == ["tiny-bert", "onnx", "test"]
    assert float(cells[5]) == pytest.approx(s["in_scope_accuracy"], abs=5e-5)
    assert float(cells[6]) == pytest.approx(s["oos_recall"], abs=5e-4)
    for line, floor in zip(lines[2:4], (0.5, 0.3), strict=True):
        row = [c.strip() for c in line.strip("|").split("|")]
        assert float(row[header.index("in-scope floor")]) == floor
        for score in OOS_SCORES:
            expected = best_recall_at(logits, test.labels, manifest, floor, score)
            cell = row[header.index(f"best oos recall at the floor ({score})")]
            if expected.oos_recall is None:
                assert cell == "unreachable"
            else:
                assert float(cell) == pytest.approx(expected.oos_recall, abs=5e-4)
    with pytest.raises(SystemExit):
        main(["--data", str(clinc_json), "frontier", str(tmp_path / "nowhere")])
    with pytest.raises(SystemExit):
        main(["--data", str(clinc_json), "frontier", str(tiny_package), "--min-in-scope", "0.9", "1.5"])
