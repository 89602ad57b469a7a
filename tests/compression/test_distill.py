"""Distillation: the loss by hand, layer-subset init, tokenizer check, Optuna search and the CLI."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from app.package import read_manifest
from compression.cli import main
from compression.data import load_clinc
from compression.distill import (
    DistillConfig,
    check_same_tokenizer,
    distillation_loss,
    load_teacher,
    prepare,
    student_from_teacher_layers,
)
from compression.search import SearchConfig, search
from tests.conftest import VOCAB


def test_loss_matches_hand_computation() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0]])
    t = torch.tensor([[1.0, 1.0, 0.0]])
    y = torch.tensor([0])
    alpha, temp = 0.3, 2.0

    def softmax(v: list[float]) -> list[float]:
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    ce = -math.log(softmax([2.0, 0.0, -1.0])[0])
    p_t = softmax([0.5, 0.5, 0.0])
    p_s = softmax([1.0, 0.0, -0.5])
    kl = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s, strict=True))
    expected = alpha * ce + (1 - alpha) * temp**2 * kl
    assert distillation_loss(s, t, y, alpha, temp).item() == pytest.approx(expected, rel=1e-6)


def test_alpha_one_is_cross_entropy() -> None:
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    y = torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert distillation_loss(s, t, y, 1.0, 4.0).item() == pytest.approx(ce.item())
    assert distillation_loss(s, t, y, 0.5, 4.0).item() != pytest.approx(ce.item())


def test_layer_subset_copies_the_right_weights(tiny_package: Path) -> None:
    teacher, _ = load_teacher(tiny_package)
    student = student_from_teacher_layers(teacher, [1])
    assert student.config.num_hidden_layers == 1
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for key, value in s_state.items():
        source = key.replace("encoder.layer.0.", "encoder.layer.1.")
        assert torch.equal(value, t_state[source]), key
    assert not torch.equal(
        s_state["bert.encoder.layer.0.attention.self.query.weight"],
        t_state["bert.encoder.layer.0.attention.self.query.weight"],
    )
    with pytest.raises(ValueError, match="distinct indices"):
        student_from_teacher_layers(teacher, [0, 5])


def test_mismatched_tokenizer_is_refused(tiny_package: Path, tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    _, teacher_tok = load_teacher(tiny_package)
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join([*VOCAB, "extra"]) + "\n")
    other = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    with pytest.raises(ValueError, match="different tokenizer vocabulary"):
        check_same_tokenizer(teacher_tok, other, "other-model")
    check_same_tokenizer(teacher_tok, teacher_tok, "same")  # the same tokenizer passes


def test_optuna_search_records_best_params(tiny_package: Path, clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    cfg = DistillConfig(teacher_dir=tiny_package, student="layers:1", batch_size=16)
    found = search(cfg, SearchConfig(n_trials=2, train_fraction=0.5, epochs=(1, 2)), data, prepare(cfg, data))
    assert set(found["best_params"]) == {"alpha", "temperature", "epochs", "learning_rate"}
    assert len(found["trials"]) == 2
    assert found["best_validation_accuracy"] == max(t["value"] for t in found["trials"])
    assert found["train_examples_per_trial"] == 120


def test_distill_cli_writes_student_and_baseline(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    argv = ["--data", str(clinc_json), "distill", "--teacher", str(tiny_package), "--student", "layers:1"]
    argv += ["--output-dir", str(out), "--epochs", "3", "--learning-rate", "5e-3", "--batch-size", "16"]
    assert main([*argv, "--trials", "2", "--trial-fraction", "0.5", "--baseline"]) == 0
    student = read_manifest(out)
    baseline = read_manifest(tmp_path / "student-nokd")
    assert student.labels == read_manifest(tiny_package).labels  # the teacher's logit order, not sorted
    assert student.labels != sorted(student.labels)
    assert student.source["optuna"]["n_trials"] == 2
    assert student.source["hyperparameters"]["alpha"] == student.source["optuna"]["best_params"]["alpha"]
    assert baseline.source["hyperparameters"]["alpha"] == 1.0
    assert student.backends == baseline.backends == ["torch", "torch-int8", "onnx", "onnx-int8"]
    assert set(student.metrics) == {"torch", "torch-int8", "onnx", "onnx-int8"}
