"""Score one package as the study does: fp32 logits, the oos rule chosen on validation, the oos AUROC."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def package_scores(package: Path, data: Any, device: str | None = None, batch_size: int = 512) -> dict[str, Any]:
    """fp32 logits on validation and test; the oos rule chosen on validation (as `calibrate`); scores on both."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from app.decision import oos_score
    from app.package import read_manifest
    from compression.calibrate import CalibrateConfig, choose_rule
    from compression.evaluate import scores

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    manifest = read_manifest(package)
    tokenizer = AutoTokenizer.from_pretrained(package)
    model = AutoModelForSequenceClassification.from_pretrained(package).to(device).eval()
    if [model.config.id2label[i] for i in range(model.config.num_labels)] != manifest.labels:
        raise ValueError(f"{package}: the model's label order differs from its manifest's")

    def logits(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[i : i + batch_size],
                    truncation=True,
                    max_length=manifest.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                out.append(model(**enc.to(device)).logits.float().cpu().numpy())
        return np.concatenate(out)

    val, test = logits(data.validation.texts), logits(data.test.texts)
    score, threshold, val_scores, _ = choose_rule(val, data.validation.labels, manifest, CalibrateConfig())
    oos = manifest.labels.index(manifest.oos_label)

    def with_auroc(block: dict[str, float], split_logits: np.ndarray, gold: list[str]) -> dict[str, float]:
        is_oos = np.asarray([g == manifest.oos_label for g in gold])
        return {**block, "oos_auroc": oos_auroc(oos_score(split_logits, oos, score), is_oos)}

    # Arg-max alone (no oos rule): how many in-scope queries the model gets right at best.
    argmax = {"threshold": -math.inf, "score": "msp"}
    return {
        "rule": {"score": score, "threshold": threshold},
        "validation": with_auroc(val_scores, val, data.validation.labels),
        "test": with_auroc(scores(test, data.test.labels, manifest, threshold, score), test, data.test.labels),
        "validation_argmax": scores(val, data.validation.labels, manifest, **argmax),
        "test_argmax": scores(test, data.test.labels, manifest, **argmax),
    }


def oos_auroc(in_scope_evidence: Any, is_oos: Any) -> float:
    """Area under the ROC curve of telling in-scope from oos queries by the score (ties count half); nan if one class."""
    import numpy as np
    from scipy.stats import rankdata

    evidence, is_oos = np.asarray(in_scope_evidence, dtype=np.float64), np.asarray(is_oos, dtype=bool)
    n_in, n_oos = int((~is_oos).sum()), int(is_oos.sum())
    if not n_in or not n_oos:
        return math.nan
    ranks = rankdata(evidence)  # Mann-Whitney: P(an in-scope query scores above an oos one)
    return float((ranks[~is_oos].sum() - n_in * (n_in + 1) / 2) / (n_in * n_oos))
