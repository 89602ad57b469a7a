"""Scores, threshold choice on validation, and evaluation written into the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.base import load_backend
from app.package import Manifest, read_manifest, verify_package
from compression.calibrate import CalibrateConfig, calibrate, choose_threshold
from compression.data import load_clinc
from compression.evaluate import EvalConfig, evaluate, format_table, scores

MANIFEST = Manifest(name="m", labels=["a", "b", "oos"])


def probs(rows: list[list[float]]) -> np.ndarray:
    return np.asarray(rows, dtype=np.float32)


def test_scores_by_hand() -> None:
    p = probs([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])
    gold = ["a", "a", "oos", "oos"]
    s = scores(p, gold, MANIFEST, threshold=0.45)
    # predictions: a (0.9), oos (0.4 < 0.45), oos (arg-max), a (0.5 >= 0.45)
    assert s == {"accuracy": 0.5, "in_scope_accuracy": 0.5, "oos_recall": 0.5}


def test_balanced_threshold_separates_confident_in_scope_from_unsure_oos() -> None:
    rng = np.random.default_rng(0)
    in_scope = [[c, 1 - c - 0.01, 0.01] for c in rng.uniform(0.7, 1.0, 300)]
    oos = [[c, 1 - c - 0.01, 0.01] for c in rng.uniform(0.34, 0.6, 10)]  # unsure, but arg-max not oos
    p = probs(in_scope + oos)
    gold = ["a"] * 300 + ["oos"] * 10
    t, s = choose_threshold(p, gold, MANIFEST, "balanced", [i / 100 for i in range(100)])
    assert 0.6 < t <= 0.7
    assert s["oos_recall"] == 1.0
    assert s["in_scope_accuracy"] == 1.0


def test_accuracy_objective_ignores_rare_oos_when_costly() -> None:
    # One oos example costs 5 in-scope examples to catch: accuracy says no threshold, balanced says catch it.
    p = probs([[0.45, 0.44, 0.11]] * 5 + [[0.6, 0.39, 0.01]] * 95 + [[0.5, 0.49, 0.01]])
    gold = ["a"] * 100 + ["oos"]
    grid = [i / 100 for i in range(100)]
    t_acc, _ = choose_threshold(p, gold, MANIFEST, "accuracy", grid)
    t_bal, s_bal = choose_threshold(p, gold, MANIFEST, "balanced", grid)
    assert t_acc == 0.0
    assert t_bal == 0.51
    assert s_bal["oos_recall"] == 1.0
    assert s_bal["in_scope_accuracy"] == 0.95
    with pytest.raises(ValueError, match="unknown objective"):
        choose_threshold(p, gold, MANIFEST, "f1", grid)


def test_recall_at_loss_respects_the_in_scope_budget() -> None:
    # in-scope confidences 0.40..0.99 (60 each step of 0.01), oos confidences 0.35..0.64
    in_scope = [[c / 100, (1 - c / 100) / 2, (1 - c / 100) / 2] for c in range(40, 100)] * 5
    oos = [[c / 100, (1 - c / 100) / 2, (1 - c / 100) / 2] for c in range(35, 65)]
    p = probs(in_scope + oos)
    gold = ["a"] * len(in_scope) + ["oos"] * len(oos)
    grid = [i / 100 for i in range(100)]
    t, s = choose_threshold(p, gold, MANIFEST, "recall-at-loss", grid, max_in_scope_loss=0.05)
    assert t == 0.43  # refuses in-scope 0.40-0.42: 3/60 = 5% of in-scope, the whole budget
    assert s["in_scope_accuracy"] == pytest.approx(0.95)
    assert s["oos_recall"] == pytest.approx(8 / 30)
    t_strict, s_strict = choose_threshold(p, gold, MANIFEST, "recall-at-loss", grid, max_in_scope_loss=0.0)
    assert t_strict == 0.40  # the highest threshold that refuses no in-scope query
    assert s_strict["oos_recall"] == pytest.approx(5 / 30)


def test_calibrate_uses_validation_and_evaluate_fills_manifest(package_copy: Path, clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    threshold = calibrate(CalibrateConfig(package_copy), data.validation)
    manifest = read_manifest(package_copy)
    assert manifest.oos_threshold == threshold
    assert manifest.source["calibration"]["split"] == "validation"
    results = evaluate(EvalConfig(package_copy, latency_runs=20, warmup_runs=2), data.test)
    assert set(results) == {"torch", "torch-int8", "onnx", "onnx-int8"}
    backend = load_backend("onnx", package_copy)
    expected = scores(backend.predict(data.test.texts), data.test.labels, manifest, threshold)
    assert results["onnx"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert results["onnx"]["accuracy"] > 0.9  # the tiny model learned the synthetic task
    manifest = verify_package(package_copy, "onnx", set())  # re-hashed after the manifest update
    assert manifest.metrics["onnx"].latency_p50_ms > 0
    table = format_table(results)
    assert table.splitlines()[0].startswith("| backend | accuracy | in-scope acc | oos recall | size MB")
    assert len(table.splitlines()) == 6
