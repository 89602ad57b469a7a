"""The transfer set: the train split plus generated queries, each with the teacher's soft targets."""

from __future__ import annotations

import logging
from typing import Any

from compression.augment import augment, crossover
from compression.data import ClincData, Split
from compression.distill.config import DistillConfig
from compression.distill.students import hidden_layers, student_tokenizer
from compression.distill.teacher import (
    DistillSplit,
    ensemble_logits,
    load_teacher,
    teacher_decisions,
    teacher_outputs,
    teacher_rule,
)
from compression.finetune import EncodedSplit
from compression.teacher_cache import cached_logits

logger = logging.getLogger(__name__)


def reads_soft_targets(cfg: DistillConfig) -> bool:
    """Whether the loss reads the teacher's logits: alpha = 1 alone is cross-entropy on hard labels."""
    return cfg.alpha < 1.0 or bool(cfg.logit_mse)


def needs_teacher_pass(cfg: DistillConfig) -> bool:
    """Whether training reads anything the teacher computes: its logits, its states, or its labels for new queries."""
    return reads_soft_targets(cfg) or bool(cfg.hidden_weight or cfg.augment.copies or cfg.augment.crossovers)


class SoftTargets:
    """The teacher's logits (and states at `layers`) over a split, through the logits cache when one is set."""

    def __init__(self, cfg: DistillConfig, teacher: Any, tokenizer: Any, labels: list[str], layers: Any) -> None:
        self.cfg, self.teacher, self.tokenizer, self.labels, self.layers = cfg, teacher, tokenizer, labels, layers
        self.device = next(teacher.parameters()).device.type
        self.cache_hits = 0  # parts of the transfer set whose logits the cache held

    def compute(self, split: Split) -> tuple[Any, Any]:
        """One teacher pass (plus the extra teachers' logits, averaged in)."""
        label2id = {label: i for i, label in enumerate(self.labels)}
        plain = EncodedSplit(split, self.tokenizer, label2id, self.cfg.max_length)
        target = self.cfg.hidden_target
        logits, hidden = teacher_outputs(self.teacher, plain, self.tokenizer, hidden_layers=self.layers, target=target)
        if self.cfg.extra_teachers:  # the hidden-state targets stay the main teacher's: the student mirrors its layers
            logits = ensemble_logits(self.cfg, logits, self.tokenizer, self.labels, split, self.device)
        return logits, hidden

    def __call__(self, split: Split) -> tuple[Any, Any]:
        """(logits, hidden states or None) of `split`."""
        cfg = self.cfg
        if cfg.logits_cache is None or self.layers:  # hidden states are too large to keep: only logits are cached
            return self.compute(split)
        teachers = [cfg.teacher_dir, *cfg.extra_teachers]
        logits, hit = cached_logits(
            cfg.logits_cache, teachers, split.texts, cfg.max_length, lambda: self.compute(split)[0]
        )
        self.cache_hits += hit
        return logits, None


class TransferRows:
    """The transfer set as it grows: texts, hard labels, soft targets and (optionally) hidden-state targets."""

    def __init__(self, train: Split, logits: Any, hidden: list[Any] | None) -> None:
        self.texts, self.hard = list(train.texts), list(train.labels)
        self.parts, self.hidden = [logits], hidden
        self.generated = {"augmented": 0, "crossovers": 0}

    def add(self, kind: str, extra: list[str], targets: SoftTargets, label: Any) -> None:
        """Generated queries: the teacher's logits as soft targets, label(logits) as their hard labels."""
        # Placeholder labels for encoding only; the real hard labels come from the teacher.
        extra_logits, extra_hidden = targets(Split(extra, [targets.labels[0]] * len(extra)))
        self.texts.extend(extra)
        self.hard.extend(label(extra_logits))
        self.parts.append(extra_logits)
        if self.hidden is not None:
            self.hidden.extend(extra_hidden)
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
    """Load the teacher and the transfer set (train + noisy copies + crossovers) with precomputed soft targets.

    Returns (teacher, the student's tokenizer, the transfer set encoded with it, label2id).

    The teacher pass is skipped when `cfg` reads no soft targets, unless `teacher_pass` (e.g. a search over alpha).
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    teacher, tokenizer, labels = load_labelled_teacher(cfg, data)
    label2id = {label: i for i, label in enumerate(labels)}
    rule = teacher_rule(cfg.teacher_dir, labels) if cfg.augment.crossovers else None  # fail before any work
    layers = hidden_layers(cfg, teacher) if cfg.hidden_weight else None
    # Soft targets are the teacher's logits on the same texts, each model reading them with its own tokenizer.
    student_tok = student_tokenizer(cfg, tokenizer)
    if cfg.hidden_weight and cfg.hidden_target == "tokens" and student_tok.get_vocab() != tokenizer.get_vocab():
        raise ValueError("--hidden-target tokens compares token by token: the student needs the teacher's tokenizer")
    targets = SoftTargets(cfg, teacher, tokenizer, labels, layers)
    computed = teacher_pass or needs_teacher_pass(cfg)
    if computed:
        rows = TransferRows(data.train, *targets(data.train))
    else:  # an alpha = 1 twin: the pass is minutes of CPU per run for targets the loss multiplies by zero
        rows = TransferRows(data.train, torch.zeros(len(data.train), len(labels)), None)
        logger.info("alpha = 1 and no teacher term: the teacher's logits are not computed")
    if cfg.augment.copies:  # noisy copies keep their intent: the teacher's arg-max labels them
        copies = augment(data.train.texts, cfg.augment)
        rows.add("augmented", copies, targets, lambda lg: [labels[i] for i in lg.argmax(-1).tolist()])
    if cfg.augment.crossovers:  # often no intent: the teacher's oos rule decides
        # With extra teachers the logits are their mean; the rule is still the main teacher's (close enough).
        extra = crossover(data.train.texts, data.train.labels, cfg.augment.crossovers, cfg.augment.seed)
        rows.add("crossovers", extra, targets, lambda lg: teacher_decisions(rule, lg.numpy(), labels))
    split, logits = Split(rows.texts, rows.hard), torch.cat(rows.parts)
    train = DistillSplit(
        split, student_tok, label2id, cfg.max_length, logits, rows.generated, rows.hidden, computed, targets.cache_hits
    )
    if rows.hidden is not None:  # token targets grow with the transfer set: say what they cost
        size = sum(h.numel() * h.element_size() for h in rows.hidden) / 2**20
        logger.info("hidden-state targets (%s, teacher layers %s): %.0f MB", cfg.hidden_target, layers, size)
    return teacher, student_tok, train, label2id


def logits_note(cfg: DistillConfig, train: DistillSplit) -> str:
    """How the run got its soft targets, for the manifest."""
    if not train.soft_targets:
        return "not computed (alpha = 1 and no teacher term: the loss reads none)"
    note = "precomputed once over the transfer set"
    if cfg.extra_teachers:
        note += f", mean of {1 + len(cfg.extra_teachers)} teachers"
    if train.cache_hits:
        note += f"; {train.cache_hits} part(s) read from the logits cache {cfg.logits_cache}"
    return note
