"""ship: a slim copy for one backend serves the same logits and verifies on its own."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from app.backends.base import load_backend
from app.package import PackageError, read_manifest, verify_package
from compression.cli import main
from tests.conftest import synthetic_split


def test_a_shipped_package_holds_only_what_its_backend_reads(tiny_package: Path, tmp_path: Path) -> None:
    from app.package import update_manifest

    package = tmp_path / "built"
    shutil.copytree(tiny_package, package)
    update_manifest(package, source={"dataset": "/data/sets/clinc150/data_oos_plus.json", "teacher": "/abs/teacher"})
    tiny_package = package
    out = tmp_path / "models" / "tiny"
    assert main(["ship", "--package", str(tiny_package), "--output-dir", str(out), "--name", "tiny-shipped"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "manifest.json", "model_quantized.onnx", "tokenizer.json", "tokenizer_config.json"]
    manifest = read_manifest(out)
    assert manifest.name == "tiny-shipped"
    assert manifest.backends == ["onnx-int8"]
    assert set(manifest.files) == set(names) - {"manifest.json"}
    assert set(manifest.metrics) <= {"onnx-int8"}
    assert manifest.source["shipped_from"] == "tiny-bert"
    assert "/" not in str(manifest.source)  # no machine paths
    texts = synthetic_split(20, seed=5)[0]
    original, slim = load_backend("onnx-int8", tiny_package), load_backend("onnx-int8", out)
    np.testing.assert_array_equal(slim.infer(slim.tokenize(texts)), original.infer(original.tokenize(texts)))
    with pytest.raises(PackageError, match="not in package"):
        load_backend("torch", out)


def test_ship_refuses_a_damaged_package_and_an_unknown_backend(package_copy: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="ship: unknown backend 'tpu'"):
        main(["ship", "--package", str(package_copy), "--output-dir", str(tmp_path / "a"), "--backend", "tpu"])
    (package_copy / "model_quantized.onnx").write_bytes(b"damaged")
    with pytest.raises(SystemExit, match="ship: sha256 mismatch"):
        main(["ship", "--package", str(package_copy), "--output-dir", str(tmp_path / "b")])
    assert not (tmp_path / "b").exists()


def shipped(tiny_package: Path, tmp_path: Path) -> Path:
    """The tiny package shipped as an onnx-int8-only folder, as `models/clinc150-minilm` is."""
    out = tmp_path / "models" / "tiny"
    assert main(["ship", "--package", str(tiny_package), "--output-dir", str(out)]) == 0
    return out


def test_a_shipped_package_is_recalibrated_on_the_backend_it_has(
    tiny_package: Path, tmp_path: Path, clinc_json: Path
) -> None:
    from compression.calibrate import CalibrateConfig, choose_rule
    from compression.data import load_clinc
    from compression.evaluate import split_logits

    out = shipped(tiny_package, tmp_path)
    assert main(["--data", str(clinc_json), "calibrate", "--package", str(out), "--objective", "balanced"]) == 0
    manifest = read_manifest(out)
    assert manifest.source["calibration"]["backend"] == "onnx-int8"
    validation = load_clinc(str(clinc_json)).validation
    logits = split_logits(load_backend("onnx-int8", out), validation, 64)
    score, threshold, _, _ = choose_rule(logits, validation.labels, manifest, CalibrateConfig(objective="balanced"))
    assert (manifest.oos_score, manifest.oos_threshold) == (score, threshold)
    verify_package(out, "onnx-int8")  # the recalibrated folder still verifies for what it serves


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["benchmark", "--packages", "{tmp}/nothing"], "benchmark: model package directory not found: "),
        (["evaluate", "--package", "{pkg}", "--backends", "torch", "onnx"], "evaluate: none of the backends"),
        # A slim package points back to the package it came from, not to the step before (which needs more files).
        (["export", "--package", "{pkg}"], "export: {pkg} is a slim package shipped for onnx-int8 from the package"),
        (["quantize", "--package", "{pkg}"], "quantize: {pkg} is a slim package shipped for onnx-int8 from the"),
        (["finish", "--package", "{pkg}"], "finish: {pkg} is a slim package shipped for onnx-int8 from the package"),
    ],
    ids=["no-package", "no-backend", "no-weights", "no-graph", "no-finish"],
)
def test_a_package_without_what_a_command_needs_ends_it_with_one_line(
    tiny_package: Path, tmp_path: Path, clinc_json: Path, argv: list[str], fragment: str
) -> None:
    out = shipped(tiny_package, tmp_path)
    data = [] if argv[0] in {"export", "quantize"} else ["--data", str(clinc_json)]  # they read no data
    args = [*data, *(a.format(pkg=out, tmp=tmp_path) for a in argv)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert isinstance(exc.value.code, str)
    assert "\n" not in exc.value.code
    assert exc.value.code.startswith(fragment.format(pkg=out, tmp=tmp_path))
    with pytest.raises((PackageError, FileNotFoundError)):  # --verbose keeps the traceback
        main(["--verbose", *args])


def test_a_failed_ship_leaves_the_package_it_would_replace(
    tiny_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compression.ship

    out = tmp_path / "shipped"
    assert main(["ship", "--package", str(tiny_package), "--output-dir", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    copies = []

    def full_disk(src: Path, dst: Path) -> None:
        copies.append(dst)
        if len(copies) == 2:
            raise OSError(28, "No space left on device")
        shutil.copyfile(src, dst)

    monkeypatch.setattr(compression.ship.shutil, "copyfile", full_disk)
    with pytest.raises(SystemExit, match=r"ship: error: .*No space left"):
        main(["ship", "--package", str(tiny_package), "--output-dir", str(out), "--name", "renamed"])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old package, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped"]  # no staging folder left behind
    verify_package(out, "onnx-int8")
    monkeypatch.undo()
    assert main(["ship", "--package", str(tiny_package), "--output-dir", str(out), "--name", "renamed"]) == 0
    assert read_manifest(out).name == "renamed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shipped"]


@pytest.mark.parametrize(
    "argv",
    [
        ["ship", "--output-dir", "{tmp}/out", "--data", "{data}"],
        ["--data", "{data}", "ship", "--output-dir", "{tmp}/out"],
        ["--oos-label", "other", "quantize"],
        ["--domains", "{data}", "export"],
        ["export", "--domains", "{data}"],
    ],
)
def test_commands_that_read_no_data_refuse_data_options(
    tiny_package: Path, tmp_path: Path, clinc_json: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    args = [a.format(tmp=tmp_path, data=clinc_json) for a in argv] + ["--package", str(tiny_package)]
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    command = next(a for a in argv if a in {"ship", "quantize", "export"})
    option = next(a for a in argv if a in {"--data", "--oos-label", "--domains"})
    assert f"error: {command} reads no intent data: {option} would have no effect" in err
    assert not (tmp_path / "out").exists()
