"""The teacher's side: its package, its logits (and hidden states) over a transfer set, its oos decisions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from compression.data import Split
from compression.distill.config import DistillConfig
from compression.distill.students import check_same_tokenizer
from compression.finetune import EncodedSplit

logger = logging.getLogger(__name__)


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
        hidden: list[Any] | None = None,
        soft_targets: bool = True,
        cache_hits: int = 0,
    ) -> None:
        super().__init__(split, tokenizer, label2id, max_length)
        self.generated = generated or {}  # rows the teacher labelled, by kind (augmented, crossovers)
        self.soft_targets = soft_targets  # False: `logits` are zeros that nothing reads (see `needs_teacher_pass`)
        self.cache_hits = cache_hits  # parts of the transfer set whose logits a logits cache held
        for row, row_logits in zip(self.rows, logits, strict=True):
            row["teacher_logits"] = row_logits
        if hidden is not None:  # the teacher's states at the mapped layers, for the hidden-state term
            for row, row_hidden in zip(self.rows, hidden, strict=True):
                row["teacher_hidden"] = row_hidden


def teacher_logits(teacher: Any, dataset: EncodedSplit, tokenizer: Any, batch_size: int = 128) -> Any:
    """Precompute the teacher's logits once over the train split (saves a teacher pass per step)."""
    return teacher_outputs(teacher, dataset, tokenizer, batch_size)[0]


def teacher_outputs(
    teacher: Any,
    dataset: EncodedSplit,
    tokenizer: Any,
    batch_size: int = 128,
    hidden_layers: list[int] | None = None,
    target: str = "cls",
) -> tuple[Any, list[Any] | None]:
    """One teacher pass: logits, and per row its states at `hidden_layers` of hidden_states, or None.

    A row's states are (layers, H) for the [CLS] target, (its tokens, layers, H) for the token target.
    """
    import torch
    from tqdm.auto import tqdm
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    device = next(teacher.parameters()).device
    logits, hidden = [], []
    teacher.eval()
    with torch.inference_mode():
        for start in tqdm(range(0, len(dataset), batch_size), desc="teacher logits", leave=False):
            rows = [
                {k: v for k, v in dataset[i].items() if k != "labels"}
                for i in range(start, min(len(dataset), start + batch_size))
            ]
            batch = collate(rows).to(device)
            out = teacher(**batch, output_hidden_states=bool(hidden_layers))
            logits.append(out.logits.float().cpu())
            if hidden_layers:
                states = torch.stack([out.hidden_states[i] for i in hidden_layers], 2).float().cpu()
                if target == "cls":
                    hidden.extend(states[:, 0].clone())  # a copy: views would keep every token alive
                else:  # unpadded, so that the collator can pad each batch to its own length
                    lengths = batch["attention_mask"].sum(1).tolist()
                    hidden.extend(row[:n].clone() for row, n in zip(states, lengths, strict=True))
    return torch.cat(logits), (hidden if hidden_layers else None)


def load_teacher(teacher_dir: Path) -> tuple[Any, Any]:
    """Teacher model + tokenizer from a package (safetensors only)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (Path(teacher_dir) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no teacher at {teacher_dir}: run `python -m compression finetune` first")
    tokenizer = AutoTokenizer.from_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir, use_safetensors=True).eval()
    return teacher, tokenizer


def ensemble_logits(
    cfg: DistillConfig, logits: Any, tokenizer: Any, labels: list[str], split: Split, device: str
) -> Any:
    """The mean of the teacher's and every extra teacher's logits, columns in the teacher's label order."""
    import torch

    total = logits.clone()
    for path in cfg.extra_teachers:
        extra, extra_tok = load_teacher(path)
        check_same_tokenizer(tokenizer, extra_tok, str(path))
        extra_labels = [extra.config.id2label[i] for i in range(extra.config.num_labels)]
        if set(extra_labels) != set(labels):
            raise ValueError(
                f"extra teacher {path} has other labels than the teacher; both must be trained on CLINC150"
            )
        order = torch.tensor([extra_labels.index(label) for label in labels])
        extra.to(device)
        plain = EncodedSplit(split, extra_tok, {label: i for i, label in enumerate(extra_labels)}, cfg.max_length)
        total += teacher_logits(extra, plain, extra_tok)[:, order]
        del extra
    return total / (1 + len(cfg.extra_teachers))


def teacher_rule(teacher_dir: Path, labels: list[str]) -> Any:
    """The teacher package's manifest, whose oos rule (score + threshold) labels generated queries."""
    from app.package import PackageError, read_manifest

    try:
        manifest = read_manifest(Path(teacher_dir))
    except (PackageError, FileNotFoundError, OSError) as exc:
        raise ValueError(
            f"crossover augmentation labels queries with the teacher's oos rule; {teacher_dir} is not a calibrated "
            f"package ({exc}). Run `python -m compression finish --package {teacher_dir}` first."
        ) from exc
    if manifest.labels != labels:
        raise ValueError(f"{teacher_dir}: manifest labels differ from the model's config labels")
    return manifest


def teacher_decisions(manifest: Any, logits: Any, labels: list[str]) -> list[str]:
    """The teacher's answers with its own oos rule: the hard labels of generated queries."""
    from app.decision import decide

    oos = labels.index(manifest.oos_label)
    pred, _ = decide(logits, oos, manifest.oos_threshold, manifest.oos_score)
    logger.info(
        "teacher decisions: %d of %d generated queries are %s", int((pred == oos).sum()), len(pred), labels[oos]
    )
    return [labels[i] for i in pred.tolist()]
