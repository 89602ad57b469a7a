"""scripts/remote/fetch.py: the chunks train.py ships back rebuild into full, verified packages."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "remote"))

import fetch  # noqa: E402
import train  # noqa: E402
import weights  # noqa: E402

from app.package import read_manifest, verify_package  # noqa: E402


def test_shipped_chunks_rebuild_the_student_against_the_teacher(
    tiny_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from safetensors.torch import load_file, save_file

    artifacts = tmp_path / "artifacts"
    teacher = shutil.copytree(tiny_package, artifacts / "teacher")
    student = shutil.copytree(tiny_package, tmp_path / "trained" / "st-a")
    state = load_file(str(student / "model.safetensors"))
    emb = "bert.embeddings.word_embeddings.weight"
    state[emb][[5, 9]] += 0.25  # two trained rows; the pack keeps only these
    state["classifier.weight"] = state["classifier.weight"] * 2
    save_file(state, str(student / "model.safetensors"), {"format": "pt"})
    (tmp_path / "scores.json").write_text("{}")
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(train, "CHUNK", 20_000)  # several chunks, so joining them is exercised
    train.ship("student", {"st-a": (student, teacher)}, tmp_path / "work", out, [tmp_path / "scores.json"])
    assert len(list(out.glob("student.tgz.*"))) > 1

    fetch.main([str(out), "--artifacts", str(artifacts), "--base", str(tiny_package), "--work", str(tmp_path / "w")])
    rebuilt = load_file(str(artifacts / "st-a" / "model.safetensors"))
    assert rebuilt.keys() == state.keys()
    for name, want in state.items():  # fp16 packing: within its rounding, the untouched rows exact
        torch.testing.assert_close(rebuilt[name], want, atol=2e-3, rtol=1e-3)
    reference = weights.load_weights(teacher)
    assert torch.equal(rebuilt[emb][:5], reference[emb][:5])
    assert not torch.allclose(rebuilt["classifier.weight"], reference["classifier.weight"])
    verify_package(artifacts / "st-a", "torch", {"model.safetensors"})  # manifest rewritten with fresh hashes
    assert read_manifest(artifacts / "st-a").labels == read_manifest(tiny_package).labels
    assert (tmp_path / "w" / "student-scores.json").is_file()
