"""Out-of-scope scores from the encoder's features, beside the service's logit scores.

The service refuses a query on a score of its logits (`app.decision`). The other common family reads the encoder's
features: the Mahalanobis distance from the first token's final hidden state to the nearest intent's mean, with one
covariance shared by the intents (Lee et al., 2018; Podolskiy et al., 2021), and the cosine similarity to the k-th
nearest training query (Sun et al., 2022). This diagnostic measures whether such a score would move a package:
per score, the rule calibration's objective picks on validation (the most oos recall for at most 1 point of in-scope
accuracy, ties to the fewest refusals, over every distinct threshold), that rule's test figures, its oos AUROC, and
the test oracle of `research.frontier` (the best accuracy any threshold reaches with both targets met). The intents'
means, covariance and neighbours come from the train split's in-scope queries. The service has no feature-space
score; this is research, not a rule.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from app.backends.base import load_backend
from app.decision import OOS_SCORES, oos_score
from app.package import Manifest, PackageError
from compression.data import ClincData
from research.frontier import sweep_evidence
from research.seeds.scores import oos_auroc

if TYPE_CHECKING:
    from app.backends.onnx import OnnxBackend

logger = logging.getLogger(__name__)

FEATURE_SCORES = ("mahalanobis", "knn")
STATE_OUTPUT = "first_token_state"


@dataclass
class FeatureScoresConfig:
    """The package and ONNX backend to read, the targets the oracle is read at, and the neighbour count."""

    package: Path = Path("artifacts/student")
    backend: str = "onnx-int8"
    min_in_scope: float = 0.95
    min_oos_recall: float = 0.70
    max_in_scope_loss: float = 0.01  # calibration's default budget (`compression calibrate`)
    k: int = 10
    batch_size: int = 64
    num_threads: int = 0


@dataclass
class ScoreRow:
    """One score of one package: its validation rule, that rule on test, its AUROC, the test oracle."""

    score: str
    threshold: float
    validation_recall: float
    validation_in_scope: float
    test: dict[str, float]
    test_auroc: float
    oracle_accuracy: float | None


class FirstTokenStates:
    """The package's ONNX graph with the first token's final hidden state (the head's input) as a second output."""

    def __init__(self, backend: OnnxBackend) -> None:
        import onnx
        import onnxruntime as ort

        (weights,) = backend.spec().weights
        model = onnx.load(str(backend.package_dir / weights))
        # BERT's pooler and MPNet's head both start with a Gather of token 0 along the sequence axis.
        picks = [
            n
            for n in model.graph.node
            if n.op_type == "Gather"
            and any(a.name == "axis" and a.i == 1 for a in n.attribute)
            and ("pooler" in n.name or "classifier" in n.name)
        ]
        if len(picks) != 1:
            raise PackageError(
                f"{backend.package_dir / weights}: found {len(picks)} first-token Gather nodes in the head "
                "(expected one, as in BERT and MPNet exports by `compression export`)"
            )
        identity = onnx.helper.make_node("Identity", [picks[0].output[0]], [STATE_OUTPUT])
        model.graph.node.append(identity)
        model.graph.output.append(onnx.helper.make_tensor_value_info(STATE_OUTPUT, onnx.TensorProto.FLOAT, None))
        options = backend.session_options()  # the served session's: threads, and exact int8 where it needs that
        self.session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self.backend = backend

    def __call__(self, texts: list[str], batch_size: int, desc: str = "") -> tuple[np.ndarray, np.ndarray]:
        """(logits, first-token states) of the texts, in batches."""
        logits, states = [], []
        for i in tqdm(range(0, len(texts), batch_size), desc=desc, leave=False, disable=not desc):
            batch = self.backend.tokenize(texts[i : i + batch_size])
            feed = {name: getattr(batch, name) for name in self.backend.input_names}
            out_logits, out_states = self.session.run(["logits", STATE_OUTPUT], feed)
            logits.append(out_logits)
            states.append(out_states)
        return np.concatenate(logits), np.concatenate(states).astype(np.float64)


def mahalanobis_score(train: np.ndarray, train_labels: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Minus the squared Mahalanobis distance to the nearest class mean, one covariance shared by the classes."""
    classes, index = np.unique(train_labels, return_inverse=True)
    means = np.stack([train[index == c].mean(axis=0) for c in range(len(classes))])
    centred = train - means[index]
    covariance = centred.T @ centred / len(train)
    # Whitening by the eigenbasis: squared distances become plain ones; the pseudo-inverse drops null directions.
    values, vectors = np.linalg.eigh(covariance)
    keep = values > values.max() * 1e-10
    whiten = vectors[:, keep] / np.sqrt(values[keep])
    q, m = queries @ whiten, means @ whiten
    d2 = (q**2).sum(axis=1)[:, None] - 2 * q @ m.T + (m**2).sum(axis=1)[None, :]
    return -d2.min(axis=1)


def knn_score(train: np.ndarray, queries: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Cosine similarity to the k-th nearest training vector."""
    if not 1 <= k <= len(train):
        raise ValueError(f"k must be in [1, {len(train)}] (the training vectors), got {k}")
    bank = train / np.linalg.norm(train, axis=1, keepdims=True)
    out = []
    for i in range(0, len(queries), chunk):
        q = queries[i : i + chunk]
        sims = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ bank.T
        out.append(np.partition(sims, -k, axis=1)[:, -k])
    return np.concatenate(out)


def rule_figures(logits: np.ndarray, gold: list[str], manifest: Manifest, evidence: np.ndarray, threshold: float):
    """Accuracy, in-scope accuracy and oos recall of "arg-max is oos, or evidence < threshold" (the service's rule)."""
    oos = manifest.labels.index(manifest.oos_label)
    y = np.asarray([manifest.labels.index(g) for g in gold])
    pred = np.where(np.asarray(evidence) < threshold, oos, logits.argmax(axis=-1))
    in_scope = y != oos
    return {
        "accuracy": float((pred == y).mean()),
        "in_scope_accuracy": float((pred[in_scope] == y[in_scope]).mean()),
        "oos_recall": float((pred[~in_scope] == oos).mean()),
    }


def score_row(
    name: str,
    manifest: Manifest,
    data: ClincData,
    logits: dict[str, np.ndarray],
    evidence: dict[str, np.ndarray],
    cfg: FeatureScoresConfig,
) -> ScoreRow:
    """The validation rule of one score (calibration's objective, exact thresholds), its test figures and oracle."""
    val = sweep_evidence(logits["validation"], data.validation.labels, manifest, evidence["validation"])
    floor = val.in_scope[0] - cfg.max_in_scope_loss
    ok = val.valid & (val.in_scope >= floor - 1e-12)
    best = val.recall[ok].max()
    k = int(np.flatnonzero(ok & (val.recall >= best - 1e-12)).min())  # ties: the fewest refusals
    threshold = float(val.thresholds[k]) if k < len(val.thresholds) - 1 else val.last + 1.0
    test = rule_figures(logits["test"], data.test.labels, manifest, evidence["test"], threshold)
    is_oos = np.asarray([g == manifest.oos_label for g in data.test.labels])
    t = sweep_evidence(logits["test"], data.test.labels, manifest, evidence["test"])
    reach = t.valid & (t.in_scope >= cfg.min_in_scope - 1e-12) & (t.recall >= cfg.min_oos_recall - 1e-12)
    accuracy = (t.in_scope * t.n_in + t.recall * t.n_oos) / (t.n_in + t.n_oos)
    oracle = float(accuracy[reach].max()) if reach.any() else None
    return ScoreRow(
        name,
        threshold,
        float(val.recall[k]),
        float(val.in_scope[k]),
        test,
        oos_auroc(evidence["test"], is_oos),
        oracle,
    )


def run_feature_scores(cfg: FeatureScoresConfig, data: ClincData) -> tuple[Manifest, list[ScoreRow]]:
    """Logits and first-token states on train, validation and test; one row per logit and feature score."""
    if cfg.backend not in ("onnx", "onnx-int8"):
        raise ValueError(f"feature scores read the ONNX graph: choose onnx or onnx-int8, not {cfg.backend!r}")
    from app.backends.onnx import OnnxBackend  # onnxruntime only when the diagnostic runs

    backend = load_backend(cfg.backend, cfg.package, cfg.num_threads)
    assert isinstance(backend, OnnxBackend)
    manifest = backend.manifest
    run = FirstTokenStates(backend)
    oos = manifest.labels.index(manifest.oos_label)
    splits = {"train": data.train, "validation": data.validation, "test": data.test}
    logits, states = {}, {}
    for name, split in splits.items():
        logits[name], states[name] = run(split.texts, cfg.batch_size, desc=f"{manifest.name} {name}")
    labels = np.asarray([manifest.labels.index(g) for g in data.train.labels])
    bank, bank_labels = states["train"][labels != oos], labels[labels != oos]
    evidence: dict[str, dict[str, np.ndarray]] = {s: {} for s in (*OOS_SCORES, *FEATURE_SCORES)}
    for split in ("validation", "test"):
        for s in OOS_SCORES:
            evidence[s][split] = oos_score(logits[split], oos, s).astype(np.float64)
        evidence["mahalanobis"][split] = mahalanobis_score(bank, bank_labels, states[split])
        evidence["knn"][split] = knn_score(bank, states[split], cfg.k)
    rows = [score_row(s, manifest, data, logits, ev, cfg) for s, ev in evidence.items()]
    for r in rows:
        logger.info(
            "%s %s: test accuracy %.4f, oracle %s", manifest.name, r.score, r.test["accuracy"], r.oracle_accuracy
        )
    return manifest, rows


def format_feature_scores(manifest: Manifest, rows: list[ScoreRow], cfg: FeatureScoresConfig) -> str:
    """A Markdown table, one row per score."""
    head = [
        "package",
        "backend",
        "score",
        "validation rule (oos below)",
        "validation oos recall",
        "validation in-scope",
        "test accuracy",
        "test in-scope",
        "test oos recall",
        "test oos AUROC",
        f"test oracle: best accuracy at in-scope >= {cfg.min_in_scope:g}, oos recall >= {cfg.min_oos_recall:g}",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        name = f"{r.score} (k={cfg.k})" if r.score == "knn" else r.score
        cells = [manifest.name, cfg.backend, name, f"{r.threshold:.4g}", f"{r.validation_recall:.3f}"]
        cells += [f"{r.validation_in_scope:.4f}", f"{r.test['accuracy']:.4f}", f"{r.test['in_scope_accuracy']:.4f}"]
        cells += [f"{r.test['oos_recall']:.3f}", f"{r.test_auroc:.4f}"]
        cells.append("unreachable" if r.oracle_accuracy is None else f"{r.oracle_accuracy:.4f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
