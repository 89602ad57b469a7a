"""The out-of-scope rule shared by the service, calibration and offline evaluation.

A query is out of scope when the arg-max label is the oos label, or when its oos score is under the
package's threshold. Three scores, chosen per package on the validation split (`compression calibrate`):

- ``msp``: the maximum softmax probability (Hendrycks & Gimpel, 2017); threshold in [0, 1].
- ``max_logit``: the largest in-scope logit (Hendrycks et al., 2022).
- ``energy``: log-sum-exp of the in-scope logits, the negative free energy (Liu et al., 2020).

Softmax normalizes away how strongly the model responds at all; the logit scores keep it, and an
off-topic query tends to excite every intent weakly. The oos logit is left out of the logit scores
because the explicit oos class is evidence *against* the query being in scope.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

OosScore = Literal["msp", "max_logit", "energy"]
OOS_SCORES: tuple[OosScore, ...] = ("msp", "max_logit", "energy")
# The fallback label when the data and the manifest name none (CLINC150's); `--oos-label` picks another.
DEFAULT_OOS_LABEL = "oos"
# Why an answer is out of scope, as `decide` numbers them from 1; the service adds the third (app.service).
OOS_REASONS = ("oos_label", "low_confidence", "unknown_words")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable row-wise softmax in float32."""
    z = logits.astype(np.float32) - logits.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def oos_score(logits: np.ndarray, oos_index: int, score: OosScore, probs: np.ndarray | None = None) -> np.ndarray:
    """The per-row in-scope evidence that is compared with the threshold (higher = more in scope).

    `probs`: softmax(logits) when the caller has it already (the service does), so "msp" does not redo it.
    """
    logits = np.asarray(logits, dtype=np.float32)
    if score == "msp":
        return (softmax(logits) if probs is None else probs).max(axis=-1)
    in_scope = np.delete(logits, oos_index, axis=-1)
    top = in_scope.max(axis=-1)
    if score == "max_logit":
        return top
    if score == "energy":
        return top + np.log(np.exp(in_scope - top[..., None]).sum(axis=-1))
    raise ValueError(f"unknown oos score {score!r}; choose one of {OOS_SCORES}")


def decide(
    logits: np.ndarray, oos_index: int, threshold: float, score: OosScore = "msp", probs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label index per row of logits, and the reason.

    reason: 0 = in scope, 1 = arg-max is the oos label, 2 = oos score under the threshold (low confidence).
    """
    best = logits.argmax(axis=-1)
    evidence = oos_score(logits, oos_index, score, probs)
    reason = np.where(best == oos_index, 1, np.where(evidence < threshold, 2, 0))
    predicted = np.where(reason > 0, oos_index, best)
    return predicted, reason


def check_threshold(threshold: float, score: OosScore) -> None:
    """Refuse a threshold that cannot mean anything for its score (ValueError with the allowed range)."""
    if not np.isfinite(threshold):
        raise ValueError(f"oos threshold must be a finite number, got {threshold!r}")
    if score == "msp" and not 0.0 <= threshold <= 1.0:
        raise ValueError(f"oos threshold {threshold} is outside [0, 1], the range of the 'msp' score (a probability)")
