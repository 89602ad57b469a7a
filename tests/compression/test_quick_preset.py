"""The `quick` preset on the real CLINC150 data: the README's default package is good enough."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from app.package import read_manifest
from compression.data import HF_DATASET, default_data_source

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_preset_on_clinc150(tmp_path: Path) -> None:
    if default_data_source() == HF_DATASET:
        pytest.skip("CLINC150 JSON not found next to the repo (../shared/data/clinc150)")
    out = tmp_path / "quick"
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "compression", "build", "--preset", "quick", "--output-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        # 7-12 min on a quiet 2-core machine, 24 min once with two training jobs beside it: the limit only
        # catches a hang, so it leaves room for a slow or shared CI runner.
        timeout=3600,
    )
    minutes = (time.perf_counter() - start) / 60
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = read_manifest(out)
    assert manifest.backends == ["torch", "torch-int8", "onnx", "onnx-int8"]
    assert len(manifest.labels) == 151
    # A calibrated oos rule: the recorded candidate, catching oos queries on validation (msp: a probability).
    calibration = manifest.source["calibration"]
    assert calibration["split"] == "validation"
    assert calibration["candidates"][manifest.oos_score]["threshold"] == manifest.oos_threshold
    assert calibration["validation_scores"]["oos_recall"] > 0.5
    if manifest.oos_score == "msp":
        assert 0.0 < manifest.oos_threshold < 1.0
    for backend in manifest.backends:
        assert manifest.metrics[backend].accuracy >= 0.85, (backend, manifest.metrics[backend])
    print(
        f"quick preset: {minutes:.1f} min; rule {manifest.oos_score} < {manifest.oos_threshold}; "
        + ", ".join(f"{b}={m.accuracy:.4f}" for b, m in manifest.metrics.items())
    )
