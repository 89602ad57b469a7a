"""The out-of-scope rule shared by the service and offline evaluation."""

from __future__ import annotations

import numpy as np


def decide(probs: np.ndarray, oos_index: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Predicted label index per row (oos when arg-max is oos or max prob < threshold), and the reason.

    reason: 0 = in scope, 1 = arg-max is the oos label, 2 = low confidence.
    """
    best = probs.argmax(axis=-1)
    confidence = probs[np.arange(len(probs)), best]
    reason = np.where(best == oos_index, 1, np.where(confidence < threshold, 2, 0))
    predicted = np.where(reason > 0, oos_index, best)
    return predicted, reason
