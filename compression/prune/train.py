"""Pruning's recovery training: the distillation Trainer, with the pruner stepped around every optimizer step.

One training path for every compression step: AdamW, linear warm-up and decay, gradient clipping and the
seeded data order are the HF Trainer's (as in fine-tuning and distillation); the loss is distill's KD loss when
the rows carry teacher logits, cross-entropy otherwise.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from torch import nn
from transformers import TrainerCallback

from compression.config import PruneConfig
from compression.distill.trainer import DistillationTrainer, collator
from compression.finetune import train_model
from compression.prune.masks import UnstructuredPruner

logger = logging.getLogger(__name__)

__all__ = ["PruningCallback", "PruningTrainer", "collator", "fit", "steps_for"]


def steps_for(n_examples: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of `epochs` passes over `n_examples` (the last batch of an epoch may be short)."""
    return max(1, math.ceil(epochs * math.ceil(n_examples / batch_size)))


class PruningCallback(TrainerCallback):
    """Sets the scheduled sparsity before each step and re-masks the weights after each optimizer step."""

    def __init__(self, pruner: UnstructuredPruner) -> None:
        self.pruner = pruner

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """The schedule is indexed by optimizer steps done so far (global_step)."""
        self.pruner.step(state.global_step)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        """Adam's momentum would otherwise revive pruned weights."""
        self.pruner.after_step()


class PruningTrainer(DistillationTrainer):
    """The KD Trainer, with movement scores in an optimizer group of their own (own learning rate, no decay)."""

    def __init__(
        self, *args: Any, pruner: UnstructuredPruner | None = None, scores_learning_rate: float = 0.0, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.pruner, self.scores_learning_rate = pruner, scores_learning_rate
        if pruner is not None:
            self.add_callback(PruningCallback(pruner))

    def create_optimizer(self) -> Any:
        """The Trainer's AdamW groups (decay / no decay), the scores apart when the pruner learns them."""
        scores = self.pruner.scores() if self.pruner is not None else []
        if self.optimizer is None and scores:
            ids = {id(p) for p in scores}
            decay = set(self.get_decay_parameter_names(self.model))
            params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad and id(p) not in ids]
            groups = [
                {"params": [p for n, p in params if n in decay], "weight_decay": self.args.weight_decay},
                {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},  # biases, LayerNorm
                {"params": scores, "weight_decay": 0.0, "lr": self.scores_learning_rate},
            ]
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
        return super().create_optimizer()


def fit(
    model: nn.Module,
    dataset: Any,
    collate: Any,
    cfg: PruneConfig,
    device: str,
    pruner: UnstructuredPruner | None = None,
    desc: str = "fine-tune",
) -> dict[str, float]:
    """Train for cfg.epochs with the KD Trainer; the pruner (if any) sets the sparsity and re-masks each step."""
    total = steps_for(len(dataset), cfg.batch_size, cfg.epochs)
    # max_steps: the schedule was laid over exactly this many steps.
    overrides = {"max_steps": total, "max_grad_norm": cfg.max_grad_norm, "use_cpu": device == "cpu"}
    result = train_model(
        model,
        cfg,
        dataset,
        collate,
        PruningTrainer,
        overrides,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        pruner=pruner,
        scores_learning_rate=cfg.scores_learning_rate,
    )
    model.eval()
    logger.info("%s: %d steps, mean loss %.4f", desc, result.global_step, result.training_loss)
    return {"steps": result.global_step, "mean_loss": result.training_loss}
