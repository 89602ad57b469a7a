"""Transfer-set augmentation: noisy copies are reproducible, new, drawn from the train vocabulary, teacher-labelled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.decision import oos_score
from app.package import read_manifest, update_manifest
from compression.augment import AugmentConfig, augment, crossover
from compression.cli import main
from compression.data import load_clinc
from compression.distill import DistillConfig, load_teacher, prepare
from tests.compression.test_distill import other_teacher

TEXTS = ["what is my account balance", "send money to my mom now", "set a timer for ten minutes"]
LABELS = ["balance", "transfer", "timer"]


def test_copies_are_reproducible_new_and_from_the_train_vocabulary() -> None:
    cfg = AugmentConfig(copies=3, p_delete=0.2, p_replace=0.2, p_swap=0.2, seed=1)
    first = augment(TEXTS, cfg)
    assert first == augment(TEXTS, cfg)  # same seed, same copies
    assert first != augment(TEXTS, AugmentConfig(copies=3, p_delete=0.2, p_replace=0.2, p_swap=0.2, seed=2))
    assert 0 < len(first) <= 3 * len(TEXTS)
    assert not set(first) & set(TEXTS)
    vocab = {w for t in TEXTS for w in t.split()}
    assert all(set(copy.split()) <= vocab for copy in first)


def test_delete_only_keeps_word_order() -> None:
    cfg = AugmentConfig(copies=2, p_delete=0.3, p_replace=0.0, p_swap=0.0, seed=0)
    for copy in augment(TEXTS, cfg):
        source = next(t.split() for t in TEXTS if _is_subsequence(copy.split(), t.split()))
        assert len(copy.split()) < len(source)


def _is_subsequence(short: list[str], long: list[str]) -> bool:
    it = iter(long)
    return all(word in it for word in short)


def test_zero_copies_adds_nothing_and_bad_settings_are_refused() -> None:
    assert augment(TEXTS, AugmentConfig(copies=0)) == []
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        AugmentConfig(copies=1, p_swap=1.5)
    with pytest.raises(ValueError, match="at least one non-zero"):
        AugmentConfig(copies=1, p_delete=0.0, p_replace=0.0, p_swap=0.0)
    with pytest.raises(ValueError, match=">= 0"):
        AugmentConfig(copies=-1)


def test_crossovers_join_the_head_of_one_intent_to_the_tail_of_another() -> None:
    texts, labels = [*TEXTS, "what is my routing number"], [*LABELS, "balance"]
    out = crossover(texts, labels, 12, seed=5)
    assert out == crossover(texts, labels, 12, seed=5)
    assert out != crossover(texts, labels, 12, seed=6)
    assert len(out) == len(set(out)) == 12
    assert not set(out) & set(texts)
    for query in out:
        words = query.split()
        # Some proper head (>= 1 word, not the whole text) + some proper tail of a text with another label.
        pairs = [
            (i, j)
            for i, head in enumerate(texts)
            for j, tail in enumerate(texts)
            if labels[i] != labels[j]
            for k in range(1, len(head.split()))
            if words[:k] == head.split()[:k]
            and 0 < len(words) - k < len(tail.split())
            and words[k:] == tail.split()[len(tail.split()) - (len(words) - k) :]
        ]
        assert pairs, query
    # Two balance queries never cross with each other: "what is my" + "routing number" needs another label.
    assert "what is my routing number" not in out


def test_crossover_settings_are_checked() -> None:
    assert crossover(TEXTS, LABELS, 0) == []
    with pytest.raises(ValueError, match="two different labels"):
        crossover(TEXTS, ["same"] * 3, 5)
    with pytest.raises(ValueError, match="3 texts but 2 labels"):
        crossover(TEXTS, LABELS[:2], 5)
    with pytest.raises(ValueError, match=">= 0"):
        AugmentConfig(crossovers=-1)


def test_crossover_rows_are_labelled_by_the_teachers_oos_rule(package_copy: Path, clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    texts = crossover(data.train.texts, data.train.labels, 40, seed=0)
    teacher, tok = load_teacher(package_copy)
    with torch.inference_mode():
        raw = teacher(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    manifest = read_manifest(package_copy)
    oos = manifest.labels.index(manifest.oos_label)
    # A threshold at the median score: about half the crossovers are oos by the rule, half keep an intent.
    median = float(torch.median(torch.from_numpy(oos_score(raw.numpy(), oos, "max_logit"))))
    update_manifest(package_copy, oos_score="max_logit", oos_threshold=median)

    aug = AugmentConfig(crossovers=40, seed=0)
    _, _, train, _ = prepare(DistillConfig(teacher_dir=package_copy, augment=aug), data)
    rows = train.rows[len(data.train) :]
    assert len(rows) == 40
    assert train.generated == {"augmented": 0, "crossovers": 40}
    torch.testing.assert_close(torch.stack([r["teacher_logits"] for r in rows]), raw, atol=1e-4, rtol=1e-4)
    expected = [oos if (raw[i].max() < median or raw[i].argmax() == oos) else int(raw[i].argmax()) for i in range(40)]
    got = [r["labels"] for r in rows]
    assert got == expected
    assert 0 < got.count(oos) < 40  # both branches of the rule are exercised


def test_crossovers_need_a_calibrated_teacher_package(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    bare = other_teacher(tiny_package, tmp_path / "bare", reorder=False)  # a model folder, no manifest
    cfg = DistillConfig(teacher_dir=bare, augment=AugmentConfig(crossovers=5))
    with pytest.raises(ValueError, match="compression finish --package"):
        prepare(cfg, load_clinc(str(clinc_json)))


def test_augmented_rows_carry_the_teachers_logits_and_arg_max(tiny_package: Path, clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    aug = AugmentConfig(copies=2, p_delete=0.2, p_replace=0.2, p_swap=0.2, seed=3)
    _, _, train, label2id = prepare(DistillConfig(teacher_dir=tiny_package, augment=aug), data)
    texts = augment(data.train.texts, aug)
    assert len(train) == len(data.train) + len(texts) > len(data.train)
    teacher, tok = load_teacher(tiny_package)
    with torch.inference_mode():
        raw = teacher(**tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")).logits
    rows = train.rows[len(data.train) :]
    torch.testing.assert_close(torch.stack([r["teacher_logits"] for r in rows]), raw, atol=1e-4, rtol=1e-4)
    assert [r["labels"] for r in rows] == raw.argmax(-1).tolist()
    # The original rows keep their gold labels.
    assert [r["labels"] for r in train.rows[: len(data.train)]] == [label2id[y] for y in data.train.labels]


def test_student_package_with_labels_in_another_order_is_refused(
    tiny_package: Path, clinc_json: Path, tmp_path: Path
) -> None:
    from compression.distill import make_student

    teacher, tok = load_teacher(tiny_package)
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    reordered = other_teacher(tiny_package, tmp_path / "reordered")
    with pytest.raises(ValueError, match="another order"):
        make_student(DistillConfig(student=str(reordered)), teacher, tok, labels)
    same = other_teacher(tiny_package, tmp_path / "same", reorder=False)
    student = make_student(DistillConfig(student=str(same)), teacher, tok, labels)
    assert student.config.id2label == teacher.config.id2label


def test_distill_cli_records_the_transfer_set_and_loss(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    argv = ["--data", str(clinc_json), "distill", "--teacher", str(tiny_package), "--student", "layers:1"]
    argv += ["--output-dir", str(out), "--epochs", "1", "--batch-size", "16", "--no-finish"]
    for bad in (["--augment-prob", "0.7"], ["--logit-mse", "-1"], ["--augment-crossovers", "-2"]):
        with pytest.raises(SystemExit) as err:
            main([*argv, *bad])
        assert err.value.code == 2
    assert main([*argv, "--augment-copies", "2", "--augment-crossovers", "7", "--logit-mse", "0.5"]) == 0
    source = read_manifest(out).source
    n_train = len(load_clinc(str(clinc_json)).train)
    assert source["transfer_set"]["train"] == n_train
    assert 0 < source["transfer_set"]["augmented"] <= 2 * n_train
    assert source["transfer_set"]["crossovers"] == 7
    assert source["hyperparameters"]["augment"]["copies"] == 2
    assert source["hyperparameters"]["logit_mse"] == 0.5
