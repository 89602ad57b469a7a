"""Fine-tune any HF encoder (id or local dir) into a CLINC150 intent classifier package."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from compression.config import FinetuneConfig
from compression.data import ClincData, Split, load_clinc
from compression.packaging import save_torch_package

logger = logging.getLogger(__name__)


class EncodedSplit:
    """A torch-style dataset of tokenized texts with integer labels."""

    def __init__(self, split: Split, tokenizer: Any, label2id: dict[str, int], max_length: int) -> None:
        enc = tokenizer(split.texts, truncation=True, max_length=max_length)
        self.rows = [
            {"input_ids": ids, "attention_mask": mask, "labels": label2id[label]}
            for ids, mask, label in zip(enc["input_ids"], enc["attention_mask"], split.labels, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


def training_args(cfg: Any, work_dir: Path, **overrides: Any) -> Any:
    """TrainingArguments shared by fine-tuning, distillation and pruning (a GPU when there is one, no checkpoints).

    `cfg` gives the batch size, learning rate, epochs, weight decay, warm-up ratio and seed; `overrides` set
    any other TrainingArguments field (pruning: its gradient clipping, step count and device).
    """
    import torch
    from transformers import TrainingArguments

    settings = {
        "output_dir": str(work_dir),
        "per_device_train_batch_size": cfg.batch_size,
        "learning_rate": cfg.learning_rate,
        "num_train_epochs": cfg.epochs,
        "weight_decay": cfg.weight_decay,
        "warmup_ratio": cfg.warmup_ratio,
        "lr_scheduler_type": "linear",
        "eval_strategy": "no",
        "save_strategy": "no",
        "logging_steps": 100,
        "report_to": [],
        "seed": cfg.seed,
        "use_cpu": not torch.cuda.is_available(),
        "bf16": getattr(cfg, "bf16", False),  # pruning has no bf16 option
        "dataloader_num_workers": 0,
    }
    return TrainingArguments(**(settings | overrides))


def train_model(
    model: Any,
    cfg: Any,
    dataset: Any,
    collate: Any,
    trainer_class: type | None = None,
    overrides: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> Any:
    """The one training loop of every step: an HF Trainer (or `trainer_class`) over `dataset`; its TrainOutput.

    `overrides` go to `training_args`, `trainer_kwargs` to the trainer (e.g. the KD loss's alpha and T).
    """
    import tempfile

    from transformers import Trainer

    with tempfile.TemporaryDirectory() as work:  # no checkpoints are kept: the caller saves the package
        trainer = (trainer_class or Trainer)(
            model=model,
            args=training_args(cfg, Path(work), **(overrides or {})),
            train_dataset=dataset,
            data_collator=collate,
            **trainer_kwargs,
        )
        return trainer.train()


def load_classifier(model_id: str, labels: list[str]) -> tuple[Any, Any]:
    """Load tokenizer + a sequence classifier head over `labels` from an HF id or local dir."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from compression.base_models import BaseModelError, install_hint, resolve_base_model

    resolved = resolve_base_model(model_id)
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved)
    except (OSError, ValueError) as exc:  # no such folder, no hub, or a name no hub could hold (HFValidationError)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]  # HF's messages run over several lines
        raise BaseModelError(f"cannot load base model {model_id!r} ({reason}); {install_hint(model_id)}") from None
    model_id = resolved
    if not tokenizer.is_fast:
        raise ValueError(f"{model_id} has no fast tokenizer (tokenizer.json); the service needs one")
    model = AutoModelForSequenceClassification.from_pretrained(
        model_id,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        ignore_mismatched_sizes=True,
    )
    return tokenizer, model


def finetune(cfg: FinetuneConfig, data: ClincData | None = None) -> Path:
    """Train and save a package at cfg.output_dir; returns its path."""
    import torch
    from transformers import DataCollatorWithPadding, set_seed

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    data = data or load_clinc()
    tokenizer, model = load_classifier(cfg.base_model, data.labels)
    label2id = {label: i for i, label in enumerate(data.labels)}
    train = data.train if cfg.max_train_samples is None else data.train.subset(cfg.max_train_samples, cfg.seed)
    train_ds = EncodedSplit(train, tokenizer, label2id, cfg.max_length)
    logger.info("fine-tuning %s on %d examples for %s epochs", cfg.base_model, len(train_ds), cfg.epochs)
    train_model(model, cfg, train_ds, DataCollatorWithPadding(tokenizer))
    model.eval()
    source = {
        "base_model": cfg.base_model,
        "dataset": data.source,
        "step": "finetune",
        "hyperparameters": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()},
    }
    save_torch_package(
        model,
        tokenizer,
        cfg.output_dir,
        name=cfg.name,
        labels=data.labels,
        oos_label=data.oos_label,
        domains=data.domains,
        max_length=cfg.max_length,
        source=source,
    )
    return Path(cfg.output_dir)
