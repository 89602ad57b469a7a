"""Steps that add files to a package never vouch for a damaged one, and never keep figures they made stale."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from app.package import BackendMetrics, PackageError, read_manifest, write_manifest
from compression.export import ExportConfig, export
from compression.packaging import drop_metrics
from compression.quantize import QuantizeConfig, quantize


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("step", "damaged"),
    [
        (lambda pkg: export(ExportConfig(pkg)), "model.safetensors"),
        (lambda pkg: quantize(QuantizeConfig(pkg)), "model.onnx"),
        (lambda pkg: export(ExportConfig(pkg)), "tokenizer.json"),
    ],
    ids=["export", "quantize", "export-tokenizer"],
)
def test_a_step_refuses_a_package_whose_files_no_longer_match(package_copy: Path, step, damaged: str) -> None:
    flip_a_byte(package_copy / damaged)
    before = (package_copy / "manifest.json").read_bytes()
    with pytest.raises(PackageError, match=f"sha256 mismatch for .*{damaged}.*would record it as valid"):
        step(package_copy)
    assert (package_copy / "manifest.json").read_bytes() == before


def figures() -> BackendMetrics:
    return BackendMetrics(accuracy=0.5, in_scope_accuracy=0.5, oos_recall=0.5, size_mb=1.0, latency_p50_ms=1.0)


def test_replacing_a_graph_drops_only_its_figures(package_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    manifest = read_manifest(package_copy)
    manifest.metrics = {"torch": figures(), "onnx": figures(), "onnx-int8": figures()}
    write_manifest(package_copy, manifest)
    with caplog.at_level(logging.WARNING, logger="compression"):
        quantize(QuantizeConfig(package_copy))
    assert sorted(read_manifest(package_copy).metrics) == ["onnx", "torch"]
    assert "dropped the test metrics of onnx-int8" in caplog.text
    export(ExportConfig(package_copy))
    assert sorted(read_manifest(package_copy).metrics) == ["torch"]


def test_dropping_all_figures(package_copy: Path) -> None:
    manifest = read_manifest(package_copy)
    manifest.metrics = {"torch": figures(), "onnx": figures()}
    drop_metrics(manifest, package_copy)
    assert manifest.metrics == {}
