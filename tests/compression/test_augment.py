"""Transfer-set augmentation: noisy copies are reproducible, new, drawn from the train vocabulary, teacher-labelled."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from app.package import read_manifest
from compression.augment import AugmentConfig, augment
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


def test_distill_cli_records_the_transfer_set(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    argv = ["--data", str(clinc_json), "distill", "--teacher", str(tiny_package), "--student", "layers:1"]
    argv += ["--output-dir", str(out), "--epochs", "1", "--batch-size", "16", "--no-finish"]
    for bad in (["--augment-prob", "0.7"], ["--augment-copies", "-1"]):
        with pytest.raises(SystemExit) as err:
            main([*argv, *bad])
        assert err.value.code == 2
    assert main([*argv, "--augment-copies", "2"]) == 0
    source = read_manifest(out).source
    n_train = len(load_clinc(str(clinc_json)).train)
    assert source["transfer_set"]["train"] == n_train
    assert 0 < source["transfer_set"]["augmented"] <= 2 * n_train
    assert source["hyperparameters"]["augment"]["copies"] == 2
