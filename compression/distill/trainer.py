"""The one training path of the compression steps that learn from a teacher: an HF Trainer with the KD loss.

Distillation uses it as it is; pruning's recovery training subclasses it (compression.prune.train).
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorWithPadding, Trainer

from compression.distill import loss as losses


def collator(tokenizer: Any) -> Any:
    """Pad a list of rows; carries the teacher's logits along when the rows have them."""
    pad = DataCollatorWithPadding(tokenizer)

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = pad([{k: v for k, v in r.items() if k != "teacher_logits"} for r in rows])
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.stack([r["teacher_logits"] for r in rows])
        return dict(batch)

    return collate


class DistillationTrainer(Trainer):
    """Trainer whose loss mixes hard labels and the teacher's soft targets (cross-entropy alone without them)."""

    def __init__(self, *args: Any, alpha: float, temperature: float, **kwargs: Any) -> None:
        if kwargs.get("args") is not None:
            kwargs["args"].remove_unused_columns = False  # keep the teacher's logits for compute_loss
        super().__init__(*args, **kwargs)
        self.alpha, self.temperature = alpha, temperature

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """The KD loss of one batch."""
        teacher = inputs.pop("teacher_logits", None)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        loss = losses.kd_loss(outputs.logits, teacher, labels, self.alpha, self.temperature)
        return (loss, outputs) if return_outputs else loss
