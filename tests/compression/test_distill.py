"""Distillation: the loss by hand, layer-subset init, tokenizer check, Optuna search and the CLI."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from app.package import read_manifest
from compression.cli import main
from compression.data import load_clinc
from compression.distill import (
    DistillConfig,
    check_same_tokenizer,
    distill,
    distillation_loss,
    load_teacher,
    needs_teacher_pass,
    prepare,
    student_from_teacher_layers,
    train_student,
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


def one_layer_student(teacher: Path, alpha: float) -> DistillConfig:
    """The tiny teacher's one-layer student, one epoch: the recipe of the teacher-pass tests."""
    return DistillConfig(
        teacher_dir=teacher, student="layers:0", alpha=alpha, epochs=1, learning_rate=5e-3, batch_size=16
    )


@pytest.fixture
def teacher_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per teacher pass (call of teacher_logits by the transfer set) from here on."""
    from compression.distill import transfer

    calls: list[int] = []
    real = transfer.teacher_logits
    monkeypatch.setattr(transfer, "teacher_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


def test_alpha_one_skips_the_teacher_pass_without_changing_the_student(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, teacher_passes: list[int]
) -> None:
    from compression.augment import AugmentConfig

    calls, data, cfg = teacher_passes, load_clinc(str(clinc_json)), one_layer_student(tiny_package, alpha=1.0)
    skipped = prepare(cfg, data)
    assert calls == []
    assert not skipped[2].soft_targets
    computed = prepare(cfg, data, teacher_pass=True)
    assert len(calls) == 1
    assert computed[2].soft_targets
    assert not torch.equal(computed[2][0]["teacher_logits"], skipped[2][0]["teacher_logits"])
    # alpha = 1 multiplies the soft targets by zero: the same student from zeros as from the real logits.
    labels = list(skipped[3])
    a = train_student(cfg, skipped[0], skipped[1], skipped[2], labels).state_dict()
    b = train_student(cfg, computed[0], computed[1], computed[2], labels).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A loss that reads the teacher refuses the zeros instead of silently learning from them.
    with pytest.raises(ValueError, match="needs the teacher's logits"):
        train_student(replace(cfg, alpha=0.5), skipped[0], skipped[1], skipped[2], labels)
    assert needs_teacher_pass(replace(cfg, augment=AugmentConfig(copies=1)))
    assert not needs_teacher_pass(cfg)
    out = distill(replace(cfg, output_dir=tmp_path / "a1"), data, skipped)
    assert read_manifest(out).source["teacher_logits"].startswith("not computed")
    assert len(calls) == 1


def test_kd_runs_share_the_teacher_pass_through_the_logits_cache(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, teacher_passes: list[int]
) -> None:
    calls, data, plain = teacher_passes, load_clinc(str(clinc_json)), one_layer_student(tiny_package, alpha=0.5)
    cached = replace(plain, logits_cache=tmp_path / "cache")
    reference = prepare(plain, data)[2]
    first = prepare(cached, data)[2]
    assert (len(calls), first.cache_hits) == (2, 0)
    second = prepare(replace(cached, seed=7), data)  # another seed of the same study: no teacher pass
    assert (len(calls), second[2].cache_hits) == (2, 1)
    for i in range(len(reference)):
        assert torch.equal(second[2][i]["teacher_logits"], reference[i]["teacher_logits"])
    assert len(list((tmp_path / "cache").iterdir())) == 1
    out = distill(replace(cached, output_dir=tmp_path / "kd"), data, second)
    assert "read from the logits cache" in read_manifest(out).source["teacher_logits"]


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


def test_student_layers_beyond_the_student_are_refused_before_the_teacher_pass(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import AutoConfig

    import compression.distill.transfer as transfer

    depth = AutoConfig.from_pretrained(tiny_package).num_hidden_layers
    cfg = DistillConfig(teacher_dir=tiny_package, student=str(tiny_package), student_layers=f"0,{depth}")
    cfg.validate()  # the student's depth is known once it is resolved, in prepare()
    monkeypatch.setattr(transfer, "SoftTargets", lambda *a: pytest.fail("the teacher pass ran"))
    with pytest.raises(ValueError, match=rf"--student-layers 0,{depth}: the student .* has layers 0-{depth - 1}"):
        prepare(cfg, load_clinc(str(clinc_json)))


def test_a_student_of_another_family_reads_its_own_tokenizer(
    tiny_mpnet_package: Path, clinc_json: Path, tmp_path: Path
) -> None:
    """MPNet teacher -> BERT-tokenizer student: soft targets are the teacher's logits on the same texts."""
    from transformers import AutoTokenizer

    from compression.distill import teacher_logits
    from compression.finetune import EncodedSplit
    from tests.conftest import build_tiny_model

    base = tmp_path / "bert-base"
    model, tokenizer = build_tiny_model(tmp_path)
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    data = load_clinc(str(clinc_json))
    cfg = DistillConfig(
        teacher_dir=tiny_mpnet_package,
        student=str(base),
        student_layers="1",
        alpha=0.2,
        temperature=2.0,
        epochs=1,
        learning_rate=5e-3,
        batch_size=16,
        output_dir=tmp_path / "student",
    )
    teacher, student_tok, train, label2id = prepare(cfg, data)
    # The transfer set holds the student's token ids ([CLS] = 2), the teacher's own reading gives the targets.
    assert student_tok.get_vocab() == tokenizer.get_vocab()
    assert train[0]["input_ids"] == tokenizer(data.train.texts[0], truncation=True, max_length=64)["input_ids"]
    teacher_tok = AutoTokenizer.from_pretrained(tiny_mpnet_package)
    assert teacher_tok.get_vocab() != tokenizer.get_vocab()
    own = teacher_logits(teacher, EncodedSplit(data.train, teacher_tok, label2id, 64), teacher_tok)
    for i in (0, len(train) - 1):
        assert torch.allclose(train[i]["teacher_logits"], own[i])
    out = distill(cfg, data, (teacher, student_tok, train, label2id))
    saved = AutoTokenizer.from_pretrained(out)
    assert saved.get_vocab() == tokenizer.get_vocab()  # the package serves with the student's tokenizer
    manifest = read_manifest(out)
    assert manifest.labels == list(label2id)  # the teacher's label order
    assert manifest.source["hyperparameters"]["student_layers"] == "1"
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(out).num_hidden_layers == 1
