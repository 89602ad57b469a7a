"""Scores, threshold choice on validation, and evaluation written into the manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.base import load_backend
from app.package import Manifest, read_manifest, verify_package
from compression.calibrate import CalibrateConfig, calibrate, choose_rule, choose_threshold
from compression.data import load_clinc
from compression.evaluate import EvalConfig, evaluate, format_table, scores

MANIFEST = Manifest(name="m", labels=["a", "b", "oos"])


def probs(rows: list[list[float]]) -> np.ndarray:
    """Logits whose softmax is exactly these probability rows (log p), so "msp" sees the written numbers."""
    return np.log(np.asarray(rows, dtype=np.float64)).astype(np.float32)


def test_scores_by_hand() -> None:
    p = probs([[0.9, 0.05, 0.05], [0.4, 0.35, 0.25], [0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])
    gold = ["a", "a", "oos", "oos"]
    s = scores(p, gold, MANIFEST, threshold=0.45)
    # predictions: a (0.9), oos (0.4 < 0.45), oos (arg-max), a (0.5 >= 0.45)
    assert s == {"accuracy": 0.5, "in_scope_accuracy": 0.5, "oos_recall": 0.5}


def test_balanced_threshold_separates_confident_in_scope_from_unsure_oos() -> None:
    rng = np.random.default_rng(0)
    in_scope = [[c, 1 - c - 0.01, 0.01] for c in rng.uniform(0.7, 0.98, 300)]
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
    # in-scope confidences 0.405..0.995 (60, steps of 0.01), oos 0.355..0.645: halfway between grid points,
    # so float rounding cannot put a confidence on either side of a threshold.
    in_scope = [[c, (1 - c) / 2, (1 - c) / 2] for c in np.arange(40.5, 100, 1.0) / 100] * 5
    oos = [[c, (1 - c) / 2, (1 - c) / 2] for c in np.arange(35.5, 65, 1.0) / 100]
    p = probs(in_scope + oos)
    gold = ["a"] * len(in_scope) + ["oos"] * len(oos)
    grid = [i / 100 for i in range(100)]
    t, s = choose_threshold(p, gold, MANIFEST, "recall-at-loss", grid, max_in_scope_loss=0.05)
    assert t == 0.43  # refuses in-scope 0.405-0.425: 3/60 = 5% of in-scope, the whole budget
    assert s["in_scope_accuracy"] == pytest.approx(0.95)
    assert s["oos_recall"] == pytest.approx(8 / 30)
    t_strict, s_strict = choose_threshold(p, gold, MANIFEST, "recall-at-loss", grid, max_in_scope_loss=0.0)
    assert t_strict == 0.40  # the highest threshold that refuses no in-scope query
    assert s_strict["oos_recall"] == pytest.approx(5 / 30)


def test_choose_rule_takes_a_logit_score_only_where_it_does_better() -> None:
    # Every row has one softmax ([4, 0, 0] shifted): msp cannot tell the weak oos rows from the in-scope ones,
    # while their in-scope logits are 3 lower, which max_logit and energy see.
    rng = np.random.default_rng(1)
    in_scope = [[4.0 + s, s, s] for s in rng.uniform(0.0, 1.0, 200)]
    weak = [[1.0 + s, -3.0 + s, -3.0 + s] for s in rng.uniform(0.0, 1.0, 20)]
    logits = np.asarray(in_scope + weak, dtype=np.float32)
    gold = ["a"] * 200 + ["oos"] * 20
    score, t, s, candidates = choose_rule(logits, gold, MANIFEST, CalibrateConfig())
    assert set(candidates) == {"msp", "max_logit", "energy"}
    assert candidates["msp"]["validation_scores"]["oos_recall"] == 0.0
    assert score == "max_logit"  # ties with energy (both catch every oos row): the earlier score wins
    assert candidates["energy"]["validation_scores"]["oos_recall"] == 1.0
    assert 2.0 <= t <= 4.0
    assert s == {"accuracy": 1.0, "in_scope_accuracy": 1.0, "oos_recall": 1.0}
    only_msp = choose_rule(logits, gold, MANIFEST, CalibrateConfig(scores=("msp",)))
    assert only_msp[0] == "msp"
    assert set(only_msp[3]) == {"msp"}
    # Where the logit scores do no better, the plain probability is kept.
    flat = np.asarray([[4.0, 0.0, 0.0]] * 50 + [[0.0, 0.0, 4.0]] * 5, dtype=np.float32)
    assert choose_rule(flat, ["a"] * 50 + ["oos"] * 5, MANIFEST, CalibrateConfig())[0] == "msp"
    with pytest.raises(ValueError, match="unknown oos score"):
        choose_rule(flat, ["a"] * 50 + ["oos"] * 5, MANIFEST, CalibrateConfig(scores=("entropy",)))  # type: ignore[arg-type]


def test_choose_rule_breaks_ties_by_in_scope_accuracy() -> None:
    # Q: confident in-scope; P: in scope but split between a and b (energy adds log 2, max logit does not);
    # R: oos whose top logit sits between P's and Q's. Both logit scores catch every R, but max_logit must
    # refuse P to do it (within the 1-point budget) while energy need not: same recall, energy refuses less.
    q, p, r = [5.0, -5.0, -10.0], [3.0, 3.0, -10.0], [3.3, -5.0, -10.0]
    logits = np.asarray([q] * 99 + [p] + [r] * 10, dtype=np.float32)
    gold = ["a"] * 100 + ["oos"] * 10
    score, _, s, candidates = choose_rule(logits, gold, MANIFEST, CalibrateConfig())
    assert candidates["max_logit"]["validation_scores"]["oos_recall"] == 1.0
    assert candidates["max_logit"]["validation_scores"]["in_scope_accuracy"] == pytest.approx(0.99)
    assert candidates["msp"]["validation_scores"]["oos_recall"] == 0.0
    assert score == "energy"
    assert s == {"accuracy": 1.0, "in_scope_accuracy": 1.0, "oos_recall": 1.0}


def test_calibrate_uses_validation_and_evaluate_fills_manifest(package_copy: Path, clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    threshold = calibrate(CalibrateConfig(package_copy), data.validation)
    manifest = read_manifest(package_copy)
    assert manifest.oos_threshold == threshold
    calibration = manifest.source["calibration"]
    assert calibration["split"] == "validation"
    assert calibration["score"] == manifest.oos_score
    assert set(calibration["candidates"]) == {"msp", "max_logit", "energy"}
    assert calibration["candidates"][manifest.oos_score]["threshold"] == threshold
    results = evaluate(EvalConfig(package_copy, latency_runs=20, warmup_runs=2), data.test)
    assert set(results) == {"torch", "torch-int8", "onnx", "onnx-int8"}
    backend = load_backend("onnx", package_copy)
    expected = scores(backend.predict_logits(data.test.texts), data.test.labels, manifest, threshold)
    assert results["onnx"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert results["onnx"]["accuracy"] > 0.9  # the tiny model learned the synthetic task
    manifest = verify_package(package_copy, "onnx")  # every file re-hashed after the manifest update
    assert manifest.metrics["onnx"].latency_p50_ms > 0
    table = format_table(results)
    assert table.splitlines()[0].startswith("| backend | accuracy | in-scope acc | oos recall | size MB")
    assert len(table.splitlines()) == 6


def test_a_new_oos_rule_drops_the_figures_measured_with_the_old_one(package_copy: Path, clinc_json: Path) -> None:
    from app.package import BackendMetrics, update_manifest

    data = load_clinc(str(clinc_json))
    calibrate(CalibrateConfig(package_copy), data.validation)
    rule = read_manifest(package_copy)
    figures = {"onnx": BackendMetrics(accuracy=0.5)}
    update_manifest(package_copy, metrics=figures)
    calibrate(CalibrateConfig(package_copy), data.validation)  # the same rule again: the figures still hold
    assert read_manifest(package_copy).metrics == figures
    other = 0.25 if rule.oos_threshold != 0.25 else 0.5  # valid for every score
    update_manifest(package_copy, oos_threshold=other)  # figures of another rule
    calibrate(CalibrateConfig(package_copy), data.validation)
    assert read_manifest(package_copy).metrics == {}


def test_backends_a_package_lacks_are_named_in_one_warning(
    package_copy: Path, clinc_json: Path, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("model.safetensors", "model.onnx"):  # as a slim onnx-int8 package
        (package_copy / name).unlink()
    from app.package import update_manifest

    update_manifest(package_copy)
    with caplog.at_level("WARNING", logger="compression.evaluate"):
        results = evaluate(EvalConfig(package_copy, latency_runs=2, warmup_runs=1), load_clinc(str(clinc_json)).test)
    assert set(results) == {"onnx-int8"}
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipping")]
    assert skipped == [f"skipping torch, torch-int8, onnx: not in package {package_copy}"]
