"""The GPU-side scoring uses the same oos rule choice as `compression calibrate` (run here on CPU)."""

from __future__ import annotations

import shutil
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


def test_missing_token_rows_flags_a_token_the_base_cannot_see(
    tiny_package: Path, clinc_json: Path, tmp_path: Path
) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import AutoTokenizer

    data = load_clinc(str(clinc_json))
    assert train.missing_token_rows(tiny_package, data) == []

    # Zero the row of a token that only an oos test query holds, as a stale pack did (it was made from
    # the in-scope splits only): the check must name it.
    tokenizer = AutoTokenizer.from_pretrained(tiny_package)
    splits = (data.train, data.validation, data.test)
    in_scope = {
        w for s in splits for t, label in zip(s.texts, s.labels, strict=True) if label != "oos" for w in t.split()
    }
    oos_test = {
        w for t, label in zip(data.test.texts, data.test.labels, strict=True) if label == "oos" for w in t.split()
    }
    token = sorted(oos_test - in_scope)[0]
    assert tokenizer.tokenize(token) == [token]
    base = shutil.copytree(tiny_package, tmp_path / "base")
    tensors = load_file(str(base / "model.safetensors"))
    name = next(k for k in tensors if k.endswith("word_embeddings.weight"))
    tensors[name][tokenizer.convert_tokens_to_ids(token)] = 0.0
    save_file(tensors, str(base / "model.safetensors"))
    assert train.missing_token_rows(base, data) == [token]


@pytest.mark.slow
def test_seeds_stage_runs_the_study_from_a_packed_teacher(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    import hashlib
    import json
    import subprocess

    import weights
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    # The teacher travels as prepare.sh packs it: fp16, only the embedding rows of the data's tokens.
    pack = tmp_path / "teacher-pack"
    pack.mkdir()
    for f in tiny_package.iterdir():
        if f.is_file() and f.suffix != ".onnx" and f.name != "model.safetensors":
            shutil.copy2(f, pack / f.name)
    data = load_clinc(str(clinc_json))
    texts = [t for split in (data.train, data.validation, data.test) for t in split.texts]
    ids = AutoTokenizer.from_pretrained(tiny_package)(texts)["input_ids"]
    token_ids = sorted({i for row in ids for i in row})
    save_file(weights.pack(weights.load_weights(tiny_package), None, token_ids), str(pack / "model.pack.safetensors"))

    out, work = tmp_path / "out", tmp_path / "work"
    script = Path(train.__file__)
    cmd = [sys.executable, str(script), "--stages", "seeds", "--out", str(out), "--work", str(work)]
    cmd += ["--data", str(clinc_json), "--teacher-pack", str(pack), "--seeds", "1,2,3", "--seed-epochs", "1"]
    cmd += ["--max-parallel", "3", "--seed-args", "--student layers:1 --alpha 0.3 --num-threads 1"]
    subprocess.run(cmd, check=True, cwd=script.parents[2], timeout=600)

    study = json.loads((out / "seeds.json").read_text())
    assert sorted((r["seed"], r["arm"]) for r in study["runs"]) == [(s, a) for s in (1, 2, 3) for a in ("a1", "kd")]
    assert study["summary"]["seeds"] == [1, 2, 3]
    assert (out / "seeds.md").read_text().count("**Verdict**") == 1
    # The study names the teacher it really used (fp16 weights), and the manifest was re-hashed to match.
    teacher = work / "teacher" / "model.safetensors"
    digest = hashlib.sha256(teacher.read_bytes()).hexdigest()
    assert study["recipe"]["teacher"] == digest
    assert read_manifest(work / "teacher").files["model.safetensors"] == digest
    assert digest != read_manifest(tiny_package).files["model.safetensors"]
