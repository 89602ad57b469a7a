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
