"""The teacher's side: its package and its logits over a transfer set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compression.data import Split
from compression.finetune import EncodedSplit


class DistillSplit(EncodedSplit):
    """Encoded texts with the teacher's logits attached to each row."""

    def __init__(
        self,
        split: Split,
        tokenizer: Any,
        label2id: dict[str, int],
        max_length: int,
        logits: Any,
        generated: dict[str, int] | None = None,
        soft_targets: bool = True,
        cache_hits: int = 0,
    ) -> None:
        super().__init__(split, tokenizer, label2id, max_length)
        self.generated = generated or {}  # rows the teacher labelled, by kind (augmented)
        self.soft_targets = soft_targets  # False: `logits` are zeros that nothing reads (see `needs_teacher_pass`)
        self.cache_hits = cache_hits  # parts of the transfer set whose logits a logits cache held
        for row, row_logits in zip(self.rows, logits, strict=True):
            row["teacher_logits"] = row_logits


def teacher_logits(teacher: Any, dataset: EncodedSplit, tokenizer: Any, batch_size: int = 128) -> Any:
    """Precompute the teacher's logits once over a split (saves a teacher pass per step)."""
    import torch
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    device = next(teacher.parameters()).device
    logits = []
    teacher.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(dataset), batch_size), desc="teacher logits", leave=False):
            rows = [
                {k: v for k, v in dataset[i].items() if k != "labels"}
                for i in range(start, min(len(dataset), start + batch_size))
            ]
            logits.append(teacher(**collate(rows).to(device)).logits.float().cpu())
    return torch.cat(logits)


def load_teacher(teacher_dir: Path) -> tuple[Any, Any]:
    """Teacher model + tokenizer from a package (safetensors only)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (Path(teacher_dir) / "model.safetensors").is_file():
        from compression.packaging import missing_input

        raise missing_input(teacher_dir, "model.safetensors", "no teacher there: run `python -m compression finetune`")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, use_safetensors=True).eval()
    return teacher, tokenizer
