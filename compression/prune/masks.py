"""Unstructured masks on the encoder's Linear weights: magnitude (Zhu & Gupta) and movement (Sanh et al. 2020).

The mask is a `torch.nn.utils.parametrize` parametrization (weight = W * mask), baked into plain weights at the
end, so the saved model is a plain classifier whose pruned weights are exact zeros.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from compression.prune.schedule import Schedule

# The pruned scope: every Linear of the encoder layers (module names, and their weights in a state dict).
ENCODER_LINEAR = re.compile(
    r"(^|\.)encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)$"
)


def encoder_linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """The encoder's attention and FFN Linear layers (the pruned scope), by module name."""
    found = [(n, m) for n, m in model.named_modules() if ENCODER_LINEAR.search(n) and isinstance(m, nn.Linear)]
    if not found:
        raise ValueError(f"{type(model).__name__} has no BERT-style encoder Linear layers to prune")
    return found


def topk_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Boolean mask keeping the highest scores, with exactly round(sparsity * numel) entries dropped."""
    n = scores.numel()
    drop = round(sparsity * n)
    mask = torch.ones(n, dtype=torch.bool, device=scores.device)
    if drop:
        # argsort, not a threshold: ties (e.g. already-zero weights) must not change the count.
        mask[scores.detach().flatten().argsort()[:drop]] = False
    return mask.view_as(scores)


class TopKBinarizer(torch.autograd.Function):
    """Top-k binary mask of the scores; straight-through gradient to the scores (Sanh et al. 2020)."""

    @staticmethod
    def forward(ctx: Any, scores: torch.Tensor, sparsity: float) -> torch.Tensor:
        """1 for the kept (highest-score) entries, 0 for the rest."""
        return topk_mask(scores, sparsity).to(scores.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        """Pass the gradient through unchanged: dL/dS = dL/dW' * W, the weight's 'movement'."""
        return grad, None


class MagnitudeMask(nn.Module):
    """Parametrization weight -> weight * mask, the mask a buffer recomputed from |W| on schedule."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The masked weight."""
        return weight * self.mask.to(weight.dtype)


class MovementMask(nn.Module):
    """Parametrization weight -> weight * TopK(scores): learned scores, straight-through top-k mask."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        # Constant init as in Sanh et al.: the scores then only record how each weight moves.
        self.scores = nn.Parameter(torch.zeros_like(weight))
        self.sparsity = 0.0

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The masked weight; the mask's gradient flows to the scores."""
        return weight * TopKBinarizer.apply(self.scores, self.sparsity).to(weight.dtype)


class UnstructuredPruner:
    """Attach masks to the encoder Linear weights, move the sparsity along a schedule, bake them at the end."""

    def __init__(self, model: nn.Module, method: str, schedule: Schedule | None = None) -> None:
        if method not in ("magnitude", "movement"):
            raise ValueError(f"unstructured method must be magnitude or movement, got {method!r}")
        self.method = method
        self.schedule = schedule
        self.sparsity = 0.0
        self.layers = encoder_linears(model)
        for _, linear in self.layers:
            mask = MagnitudeMask(linear.weight) if method == "magnitude" else MovementMask(linear.weight)
            parametrize.register_parametrization(linear, "weight", mask)

    def _masks(self) -> Iterator[tuple[nn.Module, nn.Parameter]]:
        """(parametrization, underlying dense weight) of every pruned layer."""
        for _, linear in self.layers:
            yield linear.parametrizations.weight[0], linear.parametrizations.weight.original

    def scores(self) -> list[nn.Parameter]:
        """The movement scores (empty for magnitude), for their own optimizer group."""
        return [m.scores for m, _ in self._masks() if isinstance(m, MovementMask)]

    @torch.no_grad()
    def set_sparsity(self, sparsity: float) -> None:
        """Magnitude: recompute masks from |W| and zero the pruned weights. Movement: set the top-k share."""
        if sparsity == self.sparsity:
            return
        self.sparsity = sparsity
        for mask, weight in self._masks():
            if isinstance(mask, MovementMask):
                mask.sparsity = sparsity
            else:
                mask.mask.copy_(topk_mask(weight.abs(), sparsity))
                weight.mul_(mask.mask)

    def step(self, step: int) -> None:
        """Apply the schedule before the forward pass of `step`."""
        if self.schedule is not None:
            self.set_sparsity(self.schedule(step))

    @torch.no_grad()
    def after_step(self) -> None:
        """Re-zero pruned weights after each optimizer step: Adam's momentum would otherwise revive them."""
        for mask, weight in self._masks():
            if isinstance(mask, MagnitudeMask):
                weight.mul_(mask.mask)

    def finalize(self, sparsity: float | None = None) -> None:
        """Set the final sparsity and bake W * mask into plain Linear weights (movement scores are dropped)."""
        if sparsity is None:
            sparsity = self.schedule.final if self.schedule is not None else self.sparsity
        self.set_sparsity(sparsity)
        for _, linear in self.layers:
            parametrize.remove_parametrizations(linear, "weight", leave_parametrized=True)
