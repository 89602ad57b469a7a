"""The one training path of the compression steps that learn from a teacher: an HF Trainer with the KD loss.

Distillation uses it as it is; pruning's recovery training subclasses it (compression.prune.train).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence
from transformers import DataCollatorWithPadding, Trainer

from compression.distill import loss as losses

TEACHER_FIELDS = ("teacher_logits", "teacher_hidden")


def collator(tokenizer: Any) -> Any:
    """Pad a list of rows; carries the teacher's logits (and hidden states) along when the rows have them."""
    pad = DataCollatorWithPadding(tokenizer)

    def collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
        batch = pad([{k: v for k, v in r.items() if k not in TEACHER_FIELDS} for r in rows])
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.stack([r["teacher_logits"] for r in rows])
        if "teacher_hidden" in rows[0]:
            hidden = [r["teacher_hidden"] for r in rows]
            # Token states are padded like the inputs (to the longest in the batch); [CLS] states just stack.
            batch["teacher_hidden"] = (
                pad_sequence(hidden, batch_first=True) if hidden[0].dim() == 3 else torch.stack(hidden)
            )
        return dict(batch)

    return collate


class DistillationTrainer(Trainer):
    """Trainer whose loss mixes hard labels and the teacher's soft targets (cross-entropy alone without them)."""

    def __init__(
        self,
        *args: Any,
        alpha: float,
        temperature: float,
        logit_mse: float = 0.0,
        hidden_weight: float = 0.0,
        hidden_target: str = "cls",
        **kwargs: Any,
    ) -> None:
        if kwargs.get("args") is not None:
            kwargs["args"].remove_unused_columns = False  # keep the teacher's fields for compute_loss
        super().__init__(*args, **kwargs)
        self.alpha, self.temperature, self.logit_mse = alpha, temperature, logit_mse
        self.hidden_weight, self.hidden_target = hidden_weight, hidden_target

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """The KD loss of one batch, plus the weighted hidden-state term when the batch carries its targets."""
        teacher = inputs.pop("teacher_logits", None)
        teacher_hidden = inputs.pop("teacher_hidden", None)
        labels = inputs.pop("labels")
        use_hidden = bool(self.hidden_weight) and teacher_hidden is not None
        outputs = model(**inputs, output_hidden_states=use_hidden)
        loss = losses.kd_loss(outputs.logits, teacher, labels, self.alpha, self.temperature, self.logit_mse)
        if use_hidden:
            loss = loss + self.hidden_weight * self.hidden_term(outputs, teacher_hidden, inputs["attention_mask"])
        return (loss, outputs) if return_outputs else loss

    def hidden_term(self, outputs: Any, teacher_hidden: Any, attention_mask: Any) -> Any:
        """PKD distance of the [CLS] states or token MSE, student layer by mapped teacher layer."""
        states = torch.stack(outputs.hidden_states[1:], 2)  # rows, tokens, layers, H (index 0 is the embeddings)
        target = teacher_hidden.to(states.dtype)
        if self.hidden_target == "cls":
            return losses.pkd_loss(states[:, 0], target)
        return losses.token_mse_loss(states, target, attention_mask)
