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


def test_logit_mse_adds_the_level_that_kl_ignores() -> None:
    s = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    t = torch.tensor([[1.0, 1.0, 0.0], [3.0, 2.0, 1.0]])
    y = torch.tensor([0, 1])
    base = distillation_loss(s, t, y, 0.0, 4.0).item()
    mse = sum((a - b) ** 2 for a, b in zip(s.flatten().tolist(), t.flatten().tolist(), strict=True)) / 6
    assert distillation_loss(s, t, y, 0.0, 4.0, logit_mse=0.5).item() == pytest.approx(base + 0.5 * mse, rel=1e-6)
    # KL cannot see a shift of all the student's logits; the MSE term can.
    assert distillation_loss(s + 3.0, t, y, 0.0, 4.0).item() == pytest.approx(base, rel=1e-5)
    assert distillation_loss(s + 3.0, t, y, 0.0, 4.0, logit_mse=0.5).item() > base + 0.5 * mse


def test_trainer_passes_the_logit_mse_weight_to_the_loss(
    tiny_package: Path, clinc_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compression import distill as distill_module

    seen: list[float] = []
    real = distill_module.distillation_loss

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(args[5] if len(args) > 5 else kwargs.get("logit_mse", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(distill_module, "distillation_loss", spy)
    data = load_clinc(str(clinc_json))
    cfg = DistillConfig(teacher_dir=tiny_package, student="layers:1", batch_size=64, epochs=1.0, logit_mse=0.7)
    teacher, tok, train, label2id = prepare(cfg, data)
    distill_module.train_student(cfg, teacher, tok, train, list(label2id))
    assert seen
    assert set(seen) == {0.7}


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


def other_teacher(tiny_package: Path, dst: Path, reorder: bool = True) -> Path:
    """The tiny teacher with a perturbed head and (optionally) its labels in reverse order."""
    import shutil

    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_package)
    n = model.config.num_labels
    perm = list(reversed(range(n))) if reorder else list(range(n))
    with torch.no_grad():
        model.classifier.bias += torch.linspace(-1.0, 1.0, n)
        model.classifier.weight.copy_(model.classifier.weight[perm])
        model.classifier.bias.copy_(model.classifier.bias[perm])
    labels = [model.config.id2label[i] for i in perm]
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.save_pretrained(dst)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (tiny_package / name).is_file():
            shutil.copy(tiny_package / name, dst / name)
    return dst


def test_extra_teachers_average_logits_by_label_name(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = load_clinc(str(clinc_json))
    second = other_teacher(tiny_package, tmp_path / "second")
    single = prepare(DistillConfig(teacher_dir=tiny_package), data)
    both = prepare(DistillConfig(teacher_dir=tiny_package, extra_teachers=(second,)), data)
    labels = list(single[3])
    # The second teacher's logits computed here directly, then put back into the first teacher's label order.
    tok = AutoTokenizer.from_pretrained(second)
    model = AutoModelForSequenceClassification.from_pretrained(second).eval()
    with torch.inference_mode():
        raw = model(**tok(data.train.texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    columns = [model.config.label2id[label] for label in labels]
    for i in range(len(data.train)):
        first = single[2][i]["teacher_logits"]
        expected = (first + raw[i, columns]) / 2
        torch.testing.assert_close(both[2][i]["teacher_logits"], expected, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(both[2][0]["teacher_logits"], single[2][0]["teacher_logits"])


def test_extra_teacher_with_other_labels_is_refused(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    second = other_teacher(tiny_package, tmp_path / "second", reorder=False)
    model = AutoModelForSequenceClassification.from_pretrained(second)
    model.config.id2label = {**model.config.id2label, 0: "not_a_clinc_intent"}
    model.save_pretrained(second)
    data = load_clinc(str(clinc_json))
    with pytest.raises(ValueError, match="other labels than the teacher"):
        prepare(DistillConfig(teacher_dir=tiny_package, extra_teachers=(second,)), data)
