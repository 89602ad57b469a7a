"""The real finetune -> export -> quantize -> calibrate -> evaluate chain on a tiny base model."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from app.package import read_manifest
from compression.cli import main
from tests.app.conftest import running_app


def op_types(path: Path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_build_chain_on_tiny_model(tiny_base: Path, clinc_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "pkg"
    args = ["--data", str(clinc_json), "build", "--base-model", str(tiny_base), "--output-dir", str(out)]
    assert main([*args, "--epochs", "3", "--learning-rate", "5e-3", "--batch-size", "16", "--name", "tiny"]) == 0
    manifest = read_manifest(out)
    assert manifest.name == "tiny"
    assert manifest.backends == ["torch", "torch-int8", "onnx", "onnx-int8"]
    assert len(manifest.labels) == 6
    assert manifest.domains["travel"] == ["translate"]
    assert manifest.source["base_model"] == str(tiny_base)
    assert manifest.source["hyperparameters"]["epochs"] == 3
    assert manifest.source["calibration"]["split"] == "validation"
    assert set(manifest.metrics) == {"torch", "torch-int8", "onnx", "onnx-int8"}
    assert manifest.metrics["onnx"].accuracy > 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"]["1"] == "oos"
    # ORT fusions in the fp32 graph; int8 MatMuls in the quantized one (quantized before fusion).
    assert {"SkipLayerNormalization", "Attention"} & op_types(out / "model.onnx")
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= op_types(out / "model_quantized.onnx")
    assert not list(out.glob("*.bin"))  # no pickles in a package
    assert not list(out.glob("*.pt"))


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_built_package_serves(tiny_package: Path, anyio_backend: str) -> None:
    async with running_app(tiny_package, "onnx-int8") as (client, _):
        r = await client.post("/classify", json={"text": "set an alarm for ten minutes"})
    assert r.json()["intent"] == "timer"


def test_calibrate_cli_restricts_and_checks_scores(package_copy: Path, clinc_json: Path, capsys) -> None:
    args = ["--data", str(clinc_json), "calibrate", "--package", str(package_copy)]
    assert main([*args, "--scores", "energy"]) == 0
    manifest = read_manifest(package_copy)
    assert manifest.oos_score == "energy"
    assert set(manifest.source["calibration"]["candidates"]) == {"energy"}
    with pytest.raises(SystemExit) as exc:
        main([*args, "--scores", "msp,entropy"])
    assert exc.value.code == 2
    assert "--scores: unknown ['entropy']; choose from msp, max_logit, energy" in capsys.readouterr().err


def test_full_preset_build_adds_the_student_and_its_baseline(
    tiny_base: Path, clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compression import config

    # The full preset's chain with tiny settings: the same code path, seconds instead of an hour.
    monkeypatch.setitem(config.PRESETS, "full", {"epochs": 3.0, "learning_rate": 5e-3, "batch_size": 16})
    student = {"student": "layers:1", "alpha": 0.5, "temperature": 2.0, "epochs": 2.0, "learning_rate": 5e-3}
    monkeypatch.setitem(config.STUDENT_PRESETS, "full", {**student, "baseline": True, "embedding_bits": 4})
    teacher = tmp_path / "artifacts" / "teacher"
    args = ["--data", str(clinc_json), "build", "--preset", "full", "--base-model", str(tiny_base)]
    assert main([*args, "--output-dir", str(teacher)]) == 0
    kd, nokd = read_manifest(tmp_path / "artifacts" / "student"), read_manifest(tmp_path / "artifacts" / "student-nokd")
    assert kd.source["teacher"] == nokd.source["teacher"] == str(teacher)
    assert kd.source["base_model"] == "layers:1"
    assert kd.source["hyperparameters"]["alpha"] == 0.5
    assert nokd.source["hyperparameters"]["alpha"] == 1.0
    for package in (kd, nokd):
        assert set(package.metrics) == {"torch", "torch-int8", "onnx", "onnx-int8"}
        assert package.source["quantization"]["embedding_bits"] == 4
    assert "quantization" in read_manifest(teacher).source
    assert read_manifest(teacher).source["quantization"]["embedding_bits"] == 8
    # An explicit --embedding-bits wins over the preset's, for the students too.
    explicit = tmp_path / "explicit" / "teacher"
    assert main([*args, "--output-dir", str(explicit), "--embedding-bits", "8"]) == 0
    assert read_manifest(explicit.parent / "student").source["quantization"]["embedding_bits"] == 8
    # --no-student stops at the teacher.
    other = tmp_path / "other" / "teacher"
    assert main([*args, "--output-dir", str(other), "--no-student"]) == 0
    assert not (other.parent / "student").exists()
