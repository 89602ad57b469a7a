"""Feature-space oos scores: the distances against their formulas, the graph's extra output against the torch model,
the validation rule by hand and, for the logit scores, against the product's own evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from app.backends.base import load_backend
from app.package import Manifest
from compression.data import ClincData, Split, load_clinc
from compression.evaluate import scores
from research.cli import main
from research.feature_scores import (
    FeatureScoresConfig,
    FirstTokenStates,
    knn_score,
    mahalanobis_score,
    run_feature_scores,
    score_row,
)
from tests.research.test_frontier import HAND_GOLD, HAND_ROWS, probs

MANIFEST = Manifest(name="m", labels=["a", "b", "oos"])


def textbook_mahalanobis(train: np.ndarray, labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """-min over classes of (q - mu_c)' pinv(S) (q - mu_c), S the pooled within-class covariance, one query at a time."""
    classes = sorted(set(labels.tolist()))
    means = {c: train[labels == c].mean(axis=0) for c in classes}
    centred = np.stack([x - means[c] for x, c in zip(train, labels, strict=True)])
    precision = np.linalg.pinv(centred.T @ centred / len(train))
    return np.asarray([-min((q - means[c]) @ precision @ (q - means[c]) for c in classes) for q in queries])


@pytest.mark.parametrize("rank_deficient", [False, True])
def test_mahalanobis_is_the_textbook_distance(rank_deficient: bool) -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 5)) @ rng.normal(size=(5, 5))
    labels = np.repeat([0, 1, 2], 20)
    train += labels[:, None] * 2.0
    if rank_deficient:  # one feature a copy of another: the covariance is singular and the pseudo-inverse applies
        train[:, 4] = train[:, 3]
    queries = rng.normal(size=(7, 5)) * 3
    if rank_deficient:
        queries[:, 4] = queries[:, 3]
    got = mahalanobis_score(train, labels, queries)
    assert got == pytest.approx(textbook_mahalanobis(train, labels, queries), rel=1e-6)
    # A class mean itself is at distance zero, the highest score there is.
    assert mahalanobis_score(train, labels, train[labels == 1].mean(axis=0, keepdims=True))[0] == pytest.approx(0)


def test_knn_is_the_kth_best_cosine_similarity() -> None:
    rng = np.random.default_rng(1)
    train, queries = rng.normal(size=(50, 6)), rng.normal(size=(9, 6))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    sims = np.sort(unit(queries) @ unit(train).T, axis=1)
    for k in (1, 3, 50):
        assert knn_score(train, queries, k, chunk=4) == pytest.approx(sims[:, -k])
    with pytest.raises(ValueError, match="k must be in"):
        knn_score(train, queries, 51)


@pytest.mark.parametrize("fixture", ["tiny_package", "tiny_mpnet_package"])
@pytest.mark.parametrize("backend_name", ["onnx", "onnx-int8"])
def test_first_token_state_is_the_encoders_last_hidden_state(
    fixture: str, backend_name: str, request: pytest.FixtureRequest
) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification

    package: Path = request.getfixturevalue(fixture)
    backend = load_backend(backend_name, package)
    texts = ["book a flight to paris", "what is my balance", "tell me a joke about cats please"]
    # One batch: int8 activation scales are set per batch, so the same batch must give the served logits.
    logits, states = FirstTokenStates(backend)(texts, batch_size=len(texts))
    assert logits == pytest.approx(backend.predict_logits(texts), abs=1e-5)
    model = AutoModelForSequenceClassification.from_pretrained(package).eval()
    batch = backend.tokenize(texts)
    feed = {k: torch.from_numpy(getattr(batch, k)) for k in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        hidden = model(**feed, output_hidden_states=True).hidden_states[-1][:, 0].numpy()
    # The int8 graph quantizes the layers' weights, not the state: it stays close, not equal.
    assert states == pytest.approx(hidden, abs=1e-4 if backend_name == "onnx" else 0.5)
    assert np.corrcoef(states.ravel(), hidden.ravel())[0, 1] > 0.99


def test_a_graph_without_the_heads_gather_is_refused(package_copy: Path) -> None:
    import onnx

    from app.package import PackageError

    backend = load_backend("onnx", package_copy)  # verified before the graph is changed under it
    path = package_copy / "model.onnx"
    model = onnx.load(str(path))
    for node in model.graph.node:
        if node.op_type == "Gather" and "pooler" in node.name:
            node.name = "renamed"
    onnx.save(model, str(path))
    with pytest.raises(PackageError, match="found 0 first-token Gather nodes"):
        FirstTokenStates(backend)


# The frontier's hand-made rows (gold "a" x5, "oos" x4); as evidence, each row's own top probability.
EVIDENCE = np.asarray([0.9, 0.8, 0.6, 0.5, 0.55, 0.7, 0.52, 0.45, 0.8])


@pytest.mark.parametrize(
    ("loss", "threshold", "recall", "in_scope", "accuracy"),
    [
        # 1 point of 5 in-scope queries: no right answer may go, so only the 0.45 oos query is refused.
        (0.01, 0.5, 0.5, 0.8, 6 / 9),
        # One right answer (0.5) may go: 0.45, 0.5, 0.52 refused reach recall 0.75; refusing the wrong 0.55 answer
        # too keeps it at 0.75, and the tie goes to the fewest refusals, so the cut sits at 0.55.
        (0.25, 0.55, 0.75, 0.6, 6 / 9),
    ],
)
def test_the_validation_rule_by_hand(
    loss: float, threshold: float, recall: float, in_scope: float, accuracy: float
) -> None:
    split = Split([f"q{i}" for i in range(len(HAND_GOLD))], HAND_GOLD)
    data = ClincData(split, split, split, MANIFEST.labels, domains={}, source="hand")
    cfg = FeatureScoresConfig(max_in_scope_loss=loss, min_in_scope=in_scope, min_oos_recall=recall)
    logits = {"validation": probs(HAND_ROWS), "test": probs(HAND_ROWS)}
    row = score_row("s", MANIFEST, data, logits, {"validation": EVIDENCE, "test": EVIDENCE}, cfg)
    assert row.threshold == pytest.approx(threshold)
    assert (row.validation_recall, row.validation_in_scope) == pytest.approx((recall, in_scope))
    assert row.test == pytest.approx({"accuracy": accuracy, "in_scope_accuracy": in_scope, "oos_recall": recall})
    assert row.oracle_accuracy == pytest.approx(accuracy)


def test_logit_score_rows_are_the_services_rule(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    data = load_clinc(str(clinc_json))
    cfg = FeatureScoresConfig(package=tiny_package, backend="onnx", min_in_scope=0.5, min_oos_recall=0.0, k=3)
    manifest, rows = run_feature_scores(cfg, data)
    assert [r.score for r in rows] == ["msp", "max_logit", "energy", "mahalanobis", "knn"]
    logits = load_backend("onnx", tiny_package).predict_logits(data.test.texts)
    for r in rows[:3]:  # the product's evaluation of the same rule gives the same figures
        assert r.test == pytest.approx(scores(logits, data.test.labels, manifest, r.threshold, r.score), abs=1e-12)
    out = tmp_path / "scores.md"
    args = ["--data", str(clinc_json), "feature-scores", str(tiny_package), "--backend", "onnx", "--k", "3"]
    assert main([*args, "--output", str(out)]) == 0
    lines = out.read_text().splitlines()
    assert len(lines) == 2 + 5
    assert [line.split("|")[3].strip() for line in lines[2:]] == [
        "msp",
        "max_logit",
        "energy",
        "mahalanobis",
        "knn (k=3)",
    ]


@pytest.mark.parametrize("bad", [["--k", "0"], ["--min-in-scope", "1.5"], ["--min-oos-recall", "-0.1"]])
def test_bad_options_are_usage_errors(tiny_package: Path, bad: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["feature-scores", str(tiny_package), *bad])
    assert exc.value.code == 2
