"""The oos rule: scores computed by hand on fixed logits, the decision, and threshold ranges."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.decision import check_threshold, decide, oos_score

# labels: a, b, oos (index 2)
LOGITS = np.asarray(
    [
        [4.0, 0.0, 0.0],  # confident a
        [2.0, -2.0, -2.0],  # the same softmax as row 0, every logit 2 lower
        [0.0, 1.0, 3.0],  # arg-max is oos
        [0.5, 0.4, -5.0],  # unsure between a and b
    ],
    dtype=np.float32,
)


def test_msp_is_the_max_softmax_probability() -> None:
    expected = [
        math.exp(4) / (math.exp(4) + 2),
        math.exp(4) / (math.exp(4) + 2),
        math.exp(3) / (1 + math.e + math.exp(3)),
    ]
    expected.append(math.exp(0.5) / (math.exp(0.5) + math.exp(0.4) + math.exp(-5)))
    np.testing.assert_allclose(oos_score(LOGITS, 2, "msp"), expected, rtol=1e-6)


def test_logit_scores_leave_out_the_oos_logit() -> None:
    np.testing.assert_allclose(oos_score(LOGITS, 2, "max_logit"), [4.0, 2.0, 1.0, 0.5])
    expected = [math.log(math.exp(a) + math.exp(b)) for a, b in LOGITS[:, :2].tolist()]
    np.testing.assert_allclose(oos_score(LOGITS, 2, "energy"), expected, rtol=1e-6)
    # No overflow for large logits: log-sum-exp is shifted by the max.
    big = np.asarray([[1000.0, 1000.0, 0.0]], dtype=np.float32)
    np.testing.assert_allclose(oos_score(big, 2, "energy"), [1000.0 + math.log(2)], rtol=1e-6)


def test_energy_separates_rows_that_softmax_cannot() -> None:
    # Rows 0 and 1 have one softmax, so no msp threshold can tell them apart; energy (4.0 vs 2.0) can.
    msp_pred, _ = decide(LOGITS, 2, 0.9, "msp")
    assert msp_pred[0] == msp_pred[1] == 0
    probs = np.exp(LOGITS) / np.exp(LOGITS).sum(axis=1, keepdims=True)
    assert decide(LOGITS, 2, 0.9, "msp", probs)[0].tolist() == msp_pred.tolist()  # precomputed probs, same rule
    assert decide(LOGITS, 2, 0.99, "msp", probs)[1].tolist() == [2, 2, 1, 2]
    pred, reason = decide(LOGITS, 2, 3.0, "energy")
    assert pred.tolist() == [0, 2, 2, 2]
    assert reason.tolist() == [0, 2, 1, 2]  # 1 = arg-max is oos, 2 = score under the threshold


def test_unknown_score_and_bad_thresholds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown oos score 'entropy'"):
        oos_score(LOGITS, 2, "entropy")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"outside \[0, 1\], the range of the 'msp' score"):
        check_threshold(1.5, "msp")
    with pytest.raises(ValueError, match="finite"):
        check_threshold(float("nan"), "energy")
    check_threshold(-7.25, "energy")  # logit scales have no fixed range
    check_threshold(12.0, "max_logit")
