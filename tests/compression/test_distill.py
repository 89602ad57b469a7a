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
    pkd_loss,
    prepare,
    student_from_teacher_layers,
    teacher_layer_map,
    token_mse_loss,
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
    from compression.distill import loss as losses

    seen: list[float] = []
    real = losses.distillation_loss

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(args[5] if len(args) > 5 else kwargs.get("logit_mse", 0.0))
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "distillation_loss", spy)
    data = load_clinc(str(clinc_json))
    cfg = DistillConfig(teacher_dir=tiny_package, student="layers:1", batch_size=64, epochs=1.0, logit_mse=0.7)
    teacher, tok, train, label2id = prepare(cfg, data)
    distill_module.train_student(cfg, teacher, tok, train, list(label2id))
    assert seen
    assert set(seen) == {0.7}


def test_pkd_loss_matches_hand_computation() -> None:
    # One query, two layers, H=2. Normalised: layer 0 (0.6, 0.8) vs (0.6, 0.8) -> 0; layer 1 (1, 0) vs (0, 1) -> 2.
    student = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
    teacher = torch.tensor([[[6.0, 8.0], [0.0, 2.0]]])
    assert pkd_loss(student, teacher).item() == pytest.approx(1.0)
    # The direction is compared, not the length.
    assert pkd_loss(5.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-7)


def test_teacher_layer_map_pairs_each_student_layer_with_the_output_it_replaces() -> None:
    # hidden_states[i] is the output of teacher layer i-1: student layer 0 (= teacher 0) stands for 0-1, and so on.
    assert teacher_layer_map("layers:0,2,4", 6, 3) == [2, 4, 6]
    assert teacher_layer_map("layers:0,3", 6, 2) == [3, 6]
    assert teacher_layer_map("layers:1", 2, 1) == [2]
    assert teacher_layer_map("some/hf-student", 6, 3) == [2, 4, 6]
    assert teacher_layer_map("some/hf-student", 12, 4) == [3, 6, 9, 12]


def test_token_mse_counts_real_tokens_only() -> None:
    # Two rows, three token slots, one layer, H=1; row 1's last slot is padding with a huge difference.
    student = torch.tensor([[[[1.0]], [[2.0]], [[3.0]]], [[[0.0]], [[0.0]], [[100.0]]]])
    teacher = torch.tensor([[[[1.0]], [[0.0]], [[3.0]]], [[[1.0]], [[1.0]], [[0.0]]]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    # Squared differences on real tokens: 0, 4, 0, 1, 1 -> mean 6 / 5.
    assert token_mse_loss(student, teacher, mask).item() == pytest.approx(1.2)


@pytest.mark.parametrize("target", ["cls", "tokens"])
def test_hidden_targets_are_the_teachers_states(tiny_package: Path, clinc_json: Path, target: str) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    data = load_clinc(str(clinc_json))
    plain = prepare(DistillConfig(teacher_dir=tiny_package, student="layers:0"), data)[2]
    assert "teacher_hidden" not in plain[0]
    cfg = DistillConfig(teacher_dir=tiny_package, student="layers:0", hidden_weight=1.0, hidden_target=target)
    train = prepare(cfg, data)[2]
    tok = AutoTokenizer.from_pretrained(tiny_package)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_package).eval()
    enc = tok(data.train.texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**enc, output_hidden_states=True).hidden_states
    lengths = enc["attention_mask"].sum(1).tolist()
    # The 1-layer student replaces both teacher layers: its target is the last layer's output, not the first's.
    for i in range(len(data.train)):
        got = train[i]["teacher_hidden"]
        want = hidden[2][i, 0] if target == "cls" else hidden[2][i, : lengths[i]]
        assert got.shape == (*want.shape[:-1], 1, 32)
        torch.testing.assert_close(got[..., 0, :], want, atol=1e-4, rtol=1e-4)
    first = hidden[1][0, 0] if target == "cls" else hidden[1][0, : lengths[0]]
    assert not torch.allclose(train[0]["teacher_hidden"][..., 0, :], first, atol=1e-3)


def test_generated_queries_get_hidden_targets_too(tiny_package: Path, clinc_json: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    from compression.augment import AugmentConfig

    data = load_clinc(str(clinc_json))
    cfg = DistillConfig(
        teacher_dir=tiny_package,
        student="layers:0",
        hidden_weight=1.0,
        hidden_target="tokens",
        augment=AugmentConfig(copies=1, seed=0),
    )
    train = prepare(cfg, data)[2]
    n = len(data.train)
    assert len(train) == 2 * n
    model = AutoModelForSequenceClassification.from_pretrained(tiny_package).eval()
    for i in (0, n, 2 * n - 1):  # a train query, the first and the last noisy copy
        ids = torch.as_tensor(train[i]["input_ids"])[None]
        with torch.inference_mode():
            want = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True).hidden_states[2]
        torch.testing.assert_close(train[i]["teacher_hidden"][:, 0], want[0], atol=1e-4, rtol=1e-4)


def test_trainer_computes_the_hidden_term_and_the_manifest_records_it(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from compression import distill as distill_module
    from compression.distill import loss as losses

    seen: list[tuple[tuple[int, ...], tuple[int, ...]]] = []
    real = losses.token_mse_loss

    def spy(student: torch.Tensor, teacher: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(student.shape), tuple(teacher.shape)))
        assert student.requires_grad  # the term must train the student
        return real(student, teacher, mask)

    monkeypatch.setattr(losses, "token_mse_loss", spy)
    data = load_clinc(str(clinc_json))
    off = DistillConfig(teacher_dir=tiny_package, student="layers:1", batch_size=64, epochs=1.0)
    teacher, tok, train, label2id = prepare(off, data)
    distill_module.train_student(off, teacher, tok, train, list(label2id))
    assert seen == []  # weight 0: no hidden states are asked for
    cfg = DistillConfig(
        teacher_dir=tiny_package,
        student="layers:1",
        batch_size=64,
        epochs=1.0,
        hidden_weight=0.5,
        hidden_target="tokens",
        output_dir=tmp_path / "hidden",
    )
    distill_module.distill(cfg, data)
    assert seen
    # Student and teacher states line up: rows, tokens, 1 layer, H=32.
    assert all(s == t and len(s) == 4 and s[-2:] == (1, 32) for s, t in seen)
    source = read_manifest(tmp_path / "hidden").source
    assert source["hidden_teacher_layers"] == [2]
    assert source["hyperparameters"]["hidden_weight"] == 0.5
    assert source["hyperparameters"]["hidden_target"] == "tokens"


@pytest.mark.parametrize("target", ["cls", "tokens"])
def test_compute_loss_adds_the_weighted_hidden_term(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, target: str
) -> None:
    from compression import distill as distill_module
    from compression.distill.trainer import DistillationTrainer, collator
    from compression.finetune import training_args

    data = load_clinc(str(clinc_json))
    cfg = DistillConfig(teacher_dir=tiny_package, student="layers:1", hidden_weight=0.5, hidden_target=target)
    teacher, tok, train, label2id = prepare(cfg, data)
    student = distill_module.make_student(cfg, teacher, tok, list(label2id)).eval()  # eval: no dropout noise
    trainer = DistillationTrainer(
        model=student,
        args=training_args(cfg, tmp_path),
        train_dataset=train,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        logit_mse=0.0,
        hidden_weight=0.5,
        hidden_target=target,
    )
    batch = collator(tok)([train[i] for i in range(8)])
    loss = trainer.compute_loss(student, dict(batch)).item()
    inputs = {k: v for k, v in batch.items() if k not in ("teacher_logits", "teacher_hidden", "labels")}
    with torch.no_grad():
        out = student(**inputs, output_hidden_states=True)
    kd = distillation_loss(out.logits, batch["teacher_logits"], batch["labels"], cfg.alpha, cfg.temperature).item()
    states = torch.stack(out.hidden_states[1:], 2)
    if target == "cls":
        term = pkd_loss(states[:, 0], batch["teacher_hidden"]).item()
    else:
        term = token_mse_loss(states, batch["teacher_hidden"], batch["attention_mask"]).item()
    assert term > 1e-3  # a fresh 1-layer student does not reproduce the teacher's 2-layer states
    assert loss == pytest.approx(kd + 0.5 * term, rel=1e-5)


def test_hidden_term_refuses_another_width_or_an_unknown_target(
    tiny_package: Path, clinc_json: Path, tmp_path: Path
) -> None:
    from transformers import BertConfig

    BertConfig(hidden_size=48, num_hidden_layers=1, num_attention_heads=2).save_pretrained(tmp_path / "wide")
    cfg = DistillConfig(teacher_dir=tiny_package, student=str(tmp_path / "wide"), hidden_weight=1.0)
    with pytest.raises(ValueError, match="teacher's hidden size"):
        prepare(cfg, load_clinc(str(clinc_json)))
    bad = DistillConfig(teacher_dir=tiny_package, student="layers:0", hidden_weight=1.0, hidden_target="mean")
    with pytest.raises(ValueError, match="not one of"):
        prepare(bad, load_clinc(str(clinc_json)))


def one_layer_student(teacher: Path, alpha: float) -> DistillConfig:
    """The tiny teacher's one-layer student, one epoch: the recipe of the teacher-pass tests."""
    return DistillConfig(
        teacher_dir=teacher, student="layers:0", alpha=alpha, epochs=1, learning_rate=5e-3, batch_size=16
    )


@pytest.fixture
def teacher_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """One entry per teacher pass (call of teacher_outputs by the transfer set) from here on."""
    from compression.distill import transfer

    calls: list[int] = []
    real = transfer.teacher_outputs
    monkeypatch.setattr(transfer, "teacher_outputs", lambda *a, **k: calls.append(1) or real(*a, **k))
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
    for reads in (replace(cfg, alpha=0.5), replace(cfg, logit_mse=1.0)):
        with pytest.raises(ValueError, match="needs the teacher's logits"):
            train_student(reads, skipped[0], skipped[1], skipped[2], labels)
    for other in (replace(cfg, hidden_weight=1.0), replace(cfg, augment=AugmentConfig(copies=1))):
        assert needs_teacher_pass(other)
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
    # Hidden-state targets are not cached (too large), so such a run computes its own pass.
    prepare(replace(cached, hidden_weight=1.0), data)
    assert len(calls) == 3


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
