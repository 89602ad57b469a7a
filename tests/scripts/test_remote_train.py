"""The GPU-side scoring uses the same oos rule choice as `compression calibrate` (run here on CPU)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from app.backends.base import load_backend
from app.package import read_manifest
from compression.calibrate import CalibrateConfig, choose_rule
from compression.data import load_clinc
from compression.evaluate import scores, split_logits

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "remote"))

import train


def test_split_scores_matches_calibrate_and_evaluate(tiny_package: Path, clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    result = train.split_scores(tiny_package, data, "cpu")
    manifest = read_manifest(tiny_package)
    backend = load_backend("torch", tiny_package)
    score, threshold, _, _ = choose_rule(
        split_logits(backend, data.validation, 64), data.validation.labels, manifest, CalibrateConfig()
    )
    assert (result["score"], result["threshold"]) == (score, pytest.approx(threshold, abs=1e-3))
    test = scores(split_logits(backend, data.test, 64), data.test.labels, manifest, threshold, score)
    for key, value in test.items():
        assert result["test"][key] == pytest.approx(value, abs=0.02), key
