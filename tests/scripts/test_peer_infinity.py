"""scripts/peer_infinity.py: the folder infinity reads, its start command and its request body (no install)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.package import BACKEND_FILES as OUR_BACKEND_FILES
from scripts.peer_infinity import (
    BACKEND_FILES,
    CLASSIFY_PATH,
    READY_PATH,
    PeerError,
    command,
    prepare_folder,
    request_body,
)

LABELS = ["balance", "greeting", "oos"]


def make_package(root: Path, backends: tuple[str, ...] = ("onnx", "onnx-int8")) -> Path:
    """A package folder with the files infinity reads (placeholder weights: nothing here loads them)."""
    root.mkdir()
    (root / "manifest.json").write_text(json.dumps({"name": "tiny", "labels": LABELS, "backends": list(backends)}))
    config = {
        "architectures": ["BertForSequenceClassification"],
        "id2label": {str(i): label for i, label in enumerate(LABELS)},
    }
    (root / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "model.safetensors"):
        (root / name).write_text(name)
    for backend in backends:
        (root / BACKEND_FILES[backend]).write_bytes(backend.encode())
    return root


def test_backend_files_are_those_of_our_package_format() -> None:
    assert {b: OUR_BACKEND_FILES[b] for b in ("onnx", "onnx-int8")} == BACKEND_FILES


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
def test_folder_holds_one_onnx_file_plus_config_and_tokenizer(tmp_path: Path, backend: str) -> None:
    package = make_package(tmp_path / "pkg")
    folder = prepare_folder(package, backend, tmp_path / "peer")
    names = sorted(p.name for p in folder.iterdir())
    weights = BACKEND_FILES[backend]
    assert names == sorted(["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", weights])
    assert (folder / weights).read_bytes() == backend.encode()  # the backend's own graph, not the other one
    assert (folder / "config.json").resolve() == (package / "config.json").resolve()


def test_switching_backend_in_the_same_folder_leaves_one_onnx_file(tmp_path: Path) -> None:
    package = make_package(tmp_path / "pkg")
    folder = prepare_folder(package, "onnx-int8", tmp_path / "peer")
    prepare_folder(package, "onnx", folder)
    assert sorted(p.name for p in folder.glob("*.onnx")) == ["model.onnx"]


def test_a_real_onnx_file_already_in_the_folder_is_not_deleted(tmp_path: Path) -> None:
    package = make_package(tmp_path / "pkg")
    (tmp_path / "peer").mkdir()
    (tmp_path / "peer" / "other.onnx").write_bytes(b"keep")
    with pytest.raises(PeerError, match=r"other\.onnx"):
        prepare_folder(package, "onnx", tmp_path / "peer")
    assert (tmp_path / "peer" / "other.onnx").read_bytes() == b"keep"


def test_torch_backends_are_refused(tmp_path: Path) -> None:
    package = make_package(tmp_path / "pkg")
    with pytest.raises(PeerError, match="ONNX only"):
        prepare_folder(package, "torch", tmp_path / "peer")


def test_a_backend_the_package_lacks_is_refused(tmp_path: Path) -> None:
    package = make_package(tmp_path / "pkg", backends=("onnx",))
    with pytest.raises(PeerError, match="'onnx-int8' is not in package"):
        prepare_folder(package, "onnx-int8", tmp_path / "peer")


def test_labels_that_differ_from_the_manifest_are_refused(tmp_path: Path) -> None:
    package = make_package(tmp_path / "pkg")
    config = json.loads((package / "config.json").read_text())
    config["id2label"] = {"0": "LABEL_0", "1": "LABEL_1", "2": "LABEL_2"}
    (package / "config.json").write_text(json.dumps(config))
    with pytest.raises(PeerError, match="id2label"):
        prepare_folder(package, "onnx", tmp_path / "peer")


def test_request_body_is_infinitys_classify_input() -> None:
    assert request_body("what is my bank balance", "tiny") == {"input": ["what is my bank balance"], "model": "tiny"}
    assert (READY_PATH, CLASSIFY_PATH) == ("/health", "/classify")


def test_command_serves_the_folder_with_the_onnx_engine_on_loopback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere/else")
    python = tmp_path / "venv" / "bin" / "python"
    argv, env, cwd = command(python, tmp_path / "peer", 8471, 2, served_name="tiny")
    assert argv[:2] == [str(python), "-c"]
    assert argv[3:5] == ["2", "v2"]  # the launcher's thread count, then infinity's subcommand

    def flag(name: str) -> str:
        return argv[argv.index(name) + 1]

    # `.` from inside the folder: infinity resolves the ONNX file relative to the model id.
    assert (flag("--model-id"), cwd) == (".", tmp_path / "peer")
    assert (flag("--engine"), flag("--device")) == ("optimum", "cpu")
    assert (flag("--host"), flag("--port"), flag("--served-model-name")) == ("127.0.0.1", "8471", "tiny")
    assert {"--no-model-warmup", "--onnx-disable-optimize"} <= set(argv)
    assert env["OMP_NUM_THREADS"] == "2"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["PYTHONPATH"] == env["PYTHONHOME"] == env["VIRTUAL_ENV"] == ""  # nothing of ours leaks in


def test_zero_threads_leaves_the_libraries_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    argv, env, _ = command(tmp_path / "python", tmp_path, 8471, 0)
    assert argv[3] == "0"
    assert "OMP_NUM_THREADS" not in env
