"""Structured pruning: whole attention heads and FFN neurons, ranked by first-order importance.

Smaller dense Linear layers replace the pruned ones; the same number of heads and neurons is kept in every layer
so that `config.pruned_heads` + `config.intermediate_size` describe the shapes and the package reloads with
`from_pretrained` (transformers 4.x applies `pruned_heads` at load) and exports to ONNX.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from compression.config import PruneConfig
from compression.distill.loss import kd_loss


def _layers(model: nn.Module) -> Any:
    """The encoder's layer list of a BERT-style classifier."""
    return model.base_model.encoder.layer


def _select(linear: nn.Linear, index: torch.Tensor, dim: int) -> nn.Linear:
    """A smaller Linear keeping `index` along dim 0 (outputs) or dim 1 (inputs)."""
    index = index.to(linear.weight.device)
    weight = linear.weight.detach().index_select(dim, index).clone()
    out_features, in_features = weight.shape
    new = nn.Linear(in_features, out_features, bias=linear.bias is not None)
    new = new.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias.detach()[index] if dim == 0 else linear.bias.detach())
    return new


def prune_heads_(model: nn.Module, heads_to_prune: dict[int, list[int]]) -> None:
    """Remove attention heads in place and record them in config.pruned_heads (re-applied by from_pretrained).

    Done here rather than with `model.prune_heads`, which transformers 5 removed; the result is the same.
    """
    if getattr(model.config, "pruned_heads", None):
        raise ValueError(f"the model already has pruned heads {model.config.pruned_heads}; prune the original")
    pruned: dict[int, list[int]] = {}
    for i, heads in sorted(heads_to_prune.items()):
        if not heads:
            continue
        attention = _layers(model)[i].attention
        sa = attention.self
        n, d = sa.num_attention_heads, sa.attention_head_size
        keep = [h for h in range(n) if h not in set(heads)]
        if not keep or any(h < 0 or h >= n for h in heads):
            raise ValueError(f"layer {i}: cannot prune heads {heads} of {n} (at least one must stay)")
        index = torch.cat([torch.arange(h * d, (h + 1) * d) for h in keep])
        sa.query, sa.key, sa.value = (_select(getattr(sa, k), index, 0) for k in ("query", "key", "value"))
        attention.output.dense = _select(attention.output.dense, index, 1)
        sa.num_attention_heads = len(keep)
        sa.all_head_size = len(keep) * d
        if hasattr(attention, "pruned_heads"):  # transformers 4.x bookkeeping
            attention.pruned_heads = set(attention.pruned_heads) | set(heads)
        pruned[i] = sorted(heads)
    model.config.pruned_heads = pruned


def prune_ffn_(model: nn.Module, keep: list[torch.Tensor]) -> None:
    """Keep the FFN neurons `keep[i]` of each layer; the same count everywhere, stored as config.intermediate_size."""
    sizes = {len(k) for k in keep}
    if len(sizes) != 1 or len(keep) != len(_layers(model)) or min(sizes) < 1:
        raise ValueError("keep the same number (>= 1) of FFN neurons in every layer: config has one intermediate_size")
    for layer, index in zip(_layers(model), keep, strict=True):
        index = index.sort().values
        layer.intermediate.dense = _select(layer.intermediate.dense, index, 0)
        layer.output.dense = _select(layer.output.dense, index, 1)
    model.config.intermediate_size = sizes.pop()


def importance_scores(
    model: nn.Module, batches: list[dict[str, torch.Tensor]], loss_fn: Callable[..., torch.Tensor], device: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Head and FFN-neuron importance: |dL/dgate| of a gate (= 1) on each, summed over batches.

    A head's gate scales its slice of the context vector, which is what a head_mask does (Michel et al. 2019);
    a neuron's gate scales its activation, so |dL/dgate| = |sum_tokens a * dL/da| (gradient x activation,
    first-order Taylor, Molchanov et al. 2017). Abs of each batch's gradient, as in Michel et al.'s code.
    """
    layers = _layers(model)
    head_gates = [
        torch.ones(layer.attention.self.num_attention_heads, device=device, requires_grad=True) for layer in layers
    ]
    ffn_gates = [
        torch.ones(layer.intermediate.dense.out_features, device=device, requires_grad=True) for layer in layers
    ]
    hooks = []
    for layer, hg, fg in zip(layers, head_gates, ffn_gates, strict=True):
        d = layer.attention.self.attention_head_size

        def gate_heads(module: nn.Module, args: tuple, gate: torch.Tensor = hg, d: int = d) -> tuple:
            (context, *rest) = args
            shape = context.shape
            return ((context.view(*shape[:-1], -1, d) * gate[:, None]).view(shape), *rest)

        def gate_neurons(module: nn.Module, args: tuple, output: torch.Tensor, gate: torch.Tensor = fg) -> Any:
            return output * gate

        hooks.append(layer.attention.output.dense.register_forward_pre_hook(gate_heads))
        hooks.append(layer.intermediate.register_forward_hook(gate_neurons))
    heads = torch.zeros(len(layers), head_gates[0].numel(), device=device)
    neurons = torch.zeros(len(layers), ffn_gates[0].numel(), device=device)
    was_training = model.training
    model.eval()  # no dropout: the importance of the model as it will be used
    try:
        for batch in batches:
            loss = batch_loss(model, batch, loss_fn, device)
            grads = torch.autograd.grad(loss, head_gates + ffn_gates)
            heads += torch.stack(grads[: len(layers)]).abs()
            neurons += torch.stack(grads[len(layers) :]).abs()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return heads.cpu(), neurons.cpu()


def structured_prune_(
    model: nn.Module, head_importance: torch.Tensor, ffn_importance: torch.Tensor, heads: int | None, ffn: int | None
) -> dict[str, Any]:
    """Keep the `heads` most important heads and `ffn` neurons of every layer (None = keep all); returns the plan."""
    n_heads, n_ffn = head_importance.shape[1], ffn_importance.shape[1]
    heads = n_heads if heads is None else heads
    ffn = n_ffn if ffn is None else ffn
    if not 1 <= heads <= n_heads:
        raise ValueError(f"--heads-per-layer must be in 1..{n_heads} (the model has {n_heads} heads per layer)")
    if not 1 <= ffn <= n_ffn:
        raise ValueError(f"--ffn-keep must be in 1..{n_ffn} (the model's intermediate size is {n_ffn})")
    to_prune = {
        i: sorted(set(range(n_heads)) - set(row.topk(heads).indices.tolist())) for i, row in enumerate(head_importance)
    }
    prune_heads_(model, to_prune)
    if ffn < n_ffn:
        prune_ffn_(model, [row.topk(ffn).indices for row in ffn_importance])
    return {"pruned_heads": {str(k): v for k, v in to_prune.items()}, "heads_per_layer": heads, "ffn_keep": ffn}


def batch_loss(
    model: nn.Module, batch: dict[str, torch.Tensor], loss_fn: Callable[..., torch.Tensor], device: str
) -> Any:
    """Forward one collated batch on `device` and return the (KD or CE) loss."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    teacher = batch.pop("teacher_logits", None)
    labels = batch.pop("labels")
    logits = model(**batch).logits
    return loss_fn(logits, teacher, labels)


def make_loss(cfg: PruneConfig, with_teacher: bool) -> Callable[..., torch.Tensor]:
    """distill's KD loss when a teacher is given, else plain cross-entropy (the loss recovery training uses)."""

    def loss_fn(logits: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        return kd_loss(logits, teacher if with_teacher else None, labels, cfg.alpha, cfg.temperature)

    return loss_fn
