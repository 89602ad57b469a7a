"""Distillation end to end: prepare the transfer set, train the student with the KD trainer, save the package."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compression.data import ClincData, Split, load_clinc
from compression.distill.config import DistillConfig
from compression.distill.students import make_student
from compression.distill.teacher import DistillSplit
from compression.distill.transfer import logits_note, prepare, reads_soft_targets
from compression.finetune import train_model
from compression.packaging import save_torch_package

logger = logging.getLogger(__name__)


def train_student(cfg: DistillConfig, teacher: Any, tokenizer: Any, train: DistillSplit, labels: list[str]) -> Any:
    """Build and train one student; returns the trained model."""
    from transformers import set_seed

    from compression.distill.trainer import DistillationTrainer, collator

    if reads_soft_targets(cfg) and not train.soft_targets:
        raise ValueError(
            f"alpha={cfg.alpha} needs the teacher's logits, but this transfer set was prepared for alpha = 1 "
            "without them (prepare it with teacher_pass=True)"
        )
    set_seed(cfg.seed)
    student = make_student(cfg, teacher, tokenizer, labels)
    train_model(
        student,
        cfg,
        train,
        collator(tokenizer),
        DistillationTrainer,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
    )
    return student.eval()


def accuracy(model: Any, tokenizer: Any, split: Split, label2id: dict[str, int], max_length: int) -> float:
    """Plain arg-max accuracy (no oos threshold) on a split."""
    import torch

    correct = 0
    with torch.inference_mode():
        for start in range(0, len(split), 256):
            texts = split.texts[start : start + 256]
            enc = tokenizer(texts, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
            pred = model(**enc.to(model.device)).logits.argmax(-1).tolist()
            correct += sum(p == label2id[g] for p, g in zip(pred, split.labels[start : start + 256], strict=True))
    return correct / len(split)


def distill(cfg: DistillConfig, data: ClincData | None = None, prepared: tuple | None = None) -> Path:
    """Distill and save the student package at cfg.output_dir."""
    data = data or load_clinc()
    teacher, tokenizer, train, label2id = prepared or prepare(cfg, data)
    labels = list(label2id)
    student = train_student(cfg, teacher, tokenizer, train, labels)
    val_acc = accuracy(student, tokenizer, data.validation, label2id, cfg.max_length)
    logger.info("student %s: validation accuracy %.4f (alpha=%s, T=%s)", cfg.name, val_acc, cfg.alpha, cfg.temperature)
    hyper = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items() if k != "extra_source"}
    source = {
        "base_model": cfg.student,
        "teacher": str(cfg.teacher_dir),
        "dataset": data.source,
        "step": "distill",
        "teacher_logits": logits_note(cfg, train),
        "transfer_set": {
            "train": len(data.train),
            "augmented": train.generated.get("augmented", 0),
            "augmented_labels": "teacher arg-max",
        },
        "hyperparameters": hyper,
        "validation_accuracy": val_acc,
        **cfg.extra_source,
    }
    save_torch_package(
        student,
        tokenizer,
        cfg.output_dir,
        name=cfg.name,
        labels=labels,
        oos_label=data.oos_label,
        domains=data.domains,
        max_length=cfg.max_length,
        source=source,
    )
    return Path(cfg.output_dir)
