"""The transfer set: the train split plus generated queries, each with the teacher's soft targets."""

from __future__ import annotations

import logging
from typing import Any

from compression.augment import augment
from compression.data import ClincData, Split
from compression.distill.config import DistillConfig
from compression.distill.students import check_student_layers, student_tokenizer
from compression.distill.teacher import DistillSplit, load_teacher, teacher_logits
from compression.finetune import EncodedSplit
from compression.teacher_cache import cached_logits

logger = logging.getLogger(__name__)


def reads_soft_targets(cfg: DistillConfig) -> bool:
    """Whether the loss reads the teacher's logits: alpha = 1 alone is cross-entropy on hard labels."""
    return cfg.alpha < 1.0


def needs_teacher_pass(cfg: DistillConfig) -> bool:
    """Whether training reads anything the teacher computes: its logits, or its labels for new queries."""
    return reads_soft_targets(cfg) or bool(cfg.augment.copies)


class SoftTargets:
    """The teacher's logits over a split, through the logits cache when one is set."""

    def __init__(self, cfg: DistillConfig, teacher: Any, tokenizer: Any, labels: list[str]) -> None:
        self.cfg, self.teacher, self.tokenizer, self.labels = cfg, teacher, tokenizer, labels
        self.cache_hits = 0  # parts of the transfer set whose logits the cache held

    def compute(self, split: Split) -> Any:
        """One teacher pass."""
        label2id = {label: i for i, label in enumerate(self.labels)}
        plain = EncodedSplit(split, self.tokenizer, label2id, self.cfg.max_length)
        return teacher_logits(self.teacher, plain, self.tokenizer)

    def __call__(self, split: Split) -> Any:
        """The teacher's logits of `split`."""
        cfg = self.cfg
        if cfg.logits_cache is None:
            return self.compute(split)
        logits, hit = cached_logits(
            cfg.logits_cache, [cfg.teacher_dir], split.texts, cfg.max_length, lambda: self.compute(split)
        )
        self.cache_hits += hit
        return logits


class TransferRows:
    """The transfer set as it grows: texts, hard labels and soft targets."""

    def __init__(self, train: Split, logits: Any) -> None:
        self.texts, self.hard = list(train.texts), list(train.labels)
        self.parts = [logits]
        self.generated = {"augmented": 0}

    def add(self, kind: str, extra: list[str], targets: SoftTargets, label: Any) -> None:
        """Generated queries: the teacher's logits as soft targets, label(logits) as their hard labels."""
        # Placeholder labels for encoding only; the real hard labels come from the teacher.
        extra_logits = targets(Split(extra, [targets.labels[0]] * len(extra)))
        self.texts.extend(extra)
        self.hard.extend(label(extra_logits))
        self.parts.append(extra_logits)
        self.generated[kind] = len(extra)
        logger.info("transfer set: + %d %s queries", len(extra), kind)


def load_labelled_teacher(cfg: DistillConfig, data: ClincData) -> tuple[Any, Any, list[str]]:
    """The teacher (on the GPU when there is one, for the logits pass), its tokenizer and its labels in logit order."""
    import torch

    teacher, tokenizer = load_teacher(cfg.teacher_dir)
    teacher.to("cuda" if torch.cuda.is_available() else "cpu")  # training moves the student itself
    # The student keeps the teacher's logit order, so soft targets line up label by label.
    labels = [teacher.config.id2label[i] for i in range(teacher.config.num_labels)]
    if set(labels) != set(data.labels):
        raise ValueError("the teacher's labels differ from the dataset's; distill from a teacher trained on it")
    return teacher, tokenizer, labels


def prepare(
    cfg: DistillConfig, data: ClincData, teacher_pass: bool = False
) -> tuple[Any, Any, DistillSplit, dict[str, int]]:
    """Load the teacher and the transfer set (train + noisy copies) with precomputed soft targets.

    Returns (teacher, the student's tokenizer, the transfer set encoded with it, label2id).

    The teacher pass is skipped when `cfg` reads no soft targets, unless `teacher_pass` (e.g. a search over alpha).
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    teacher, tokenizer, labels = load_labelled_teacher(cfg, data)
    label2id = {label: i for i, label in enumerate(labels)}
    # Soft targets are the teacher's logits on the same texts, each model reading them with its own tokenizer.
    student_tok = student_tokenizer(cfg, tokenizer)
    check_student_layers(cfg)  # before the teacher's pass, which can take minutes
    targets = SoftTargets(cfg, teacher, tokenizer, labels)
    computed = teacher_pass or needs_teacher_pass(cfg)
    if computed:
        rows = TransferRows(data.train, targets(data.train))
    else:  # an alpha = 1 twin: the pass is minutes of CPU per run for targets the loss multiplies by zero
        rows = TransferRows(data.train, torch.zeros(len(data.train), len(labels)))
        logger.info("alpha = 1 and no teacher term: the teacher's logits are not computed")
    if cfg.augment.copies:  # noisy copies keep their intent: the teacher's arg-max labels them
        copies = augment(data.train.texts, cfg.augment)
        rows.add("augmented", copies, targets, lambda lg: [labels[i] for i in lg.argmax(-1).tolist()])
    split, logits = Split(rows.texts, rows.hard), torch.cat(rows.parts)
    train = DistillSplit(
        split, student_tok, label2id, cfg.max_length, logits, rows.generated, computed, targets.cache_hits
    )
    return teacher, student_tok, train, label2id


def logits_note(cfg: DistillConfig, train: DistillSplit) -> str:
    """How the run got its soft targets, for the manifest."""
    if not train.soft_targets:
        return "not computed (alpha = 1 and no teacher term: the loss reads none)"
    note = "precomputed once over the transfer set"
    if train.cache_hits:
        note += f"; {train.cache_hits} part(s) read from the logits cache {cfg.logits_cache}"
    return note
