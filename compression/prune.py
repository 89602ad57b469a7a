"""Pruning of a classifier package: magnitude (Zhu & Gupta 2017), movement (Sanh et al. 2020) and structured.

Unstructured methods mask the encoder's Linear weights (attention query/key/value/output and FFN
intermediate/output; never embeddings, pooler or classifier) with a per-matrix top-k mask, so every matrix
ends at the same sparsity, raised along the cubic schedule of Zhu & Gupta during fine-tuning. The mask is a
`torch.nn.utils.parametrize` parametrization (weight = W * mask), baked into plain weights at the end, so the
saved model is a plain BertForSequenceClassification whose pruned weights are exact zeros.

Structured pruning removes whole attention heads and FFN neurons, ranked by first-order (mask-gradient)
importance, and rebuilds smaller dense Linear layers; the same number of heads and neurons is kept in every
layer so that `config.pruned_heads` + `config.intermediate_size` describe the shapes and the package reloads
with `from_pretrained` and exports to ONNX. Loading needs transformers 4.x (the pinned 4.57 applies
`pruned_heads` at load; 5.x dropped head pruning), which is what export and serving use.

The training loop is plain PyTorch (no HF Trainer), runs on CUDA when available, and needs no transformers
API that 5.x removed: pruning can run on a GPU machine with 5.x (`--no-finish`) and be finished here.
"""

from __future__ import annotations

import logging
import math
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from app.package import read_manifest, update_manifest
from compression.config import PruneConfig
from compression.data import ClincData, load_clinc
from compression.distill import DistillSplit, check_same_tokenizer, distillation_loss, teacher_logits
from compression.finetune import EncodedSplit
from compression.packaging import TOKENIZER_FILES, refresh_manifest, save_torch_package
from compression.teacher_cache import cached_logits

logger = logging.getLogger(__name__)

# The pruned scope: every Linear of the encoder layers (module names, and their weights in a state dict).
ENCODER_LINEAR = re.compile(
    r"(^|\.)encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)$"
)
WEIGHT_FILES = ("model.safetensors", "model.onnx", "model_quantized.onnx")
GZIP_LEVEL = 6  # gzip's default level: what `gzip FILE` gives


# ---------------------------------------------------------------------------------------------- schedule


def cubic_sparsity(step: int, initial: float, final: float, start_step: int, n_updates: int, every: int) -> float:
    """Zhu & Gupta's s_t = s_f + (s_i - s_f)(1 - (t - t0)/(n dt))^3, updated every dt steps; s_i before t0."""
    if step < start_step:
        return initial
    # Hold the value between updates: t is rounded down to the last update step t0 + k dt.
    done = min(n_updates, (step - start_step) // every)
    if done == n_updates:
        return final  # exact, not final + 0.0 * (...) rounding
    return final + (initial - final) * (1.0 - done / n_updates) ** 3 if done else initial


@dataclass
class Schedule:
    """A cubic sparsity schedule laid over `total_steps` training steps."""

    initial: float
    final: float
    start_step: int
    n_updates: int
    every: int

    @classmethod
    def over(cls, cfg: PruneConfig, total_steps: int) -> Schedule:
        """t0, n and dt from the config's fractions, so that s_f is reached at or before `prune_end`."""
        last = max(0, total_steps - 1)
        start = min(last, int(cfg.prune_start * total_steps))
        end = min(last, max(start + 1, int(cfg.prune_end * total_steps)))
        span = max(1, end - start)
        every = min(cfg.prune_every, span)  # short runs: still several updates, never past the end
        return cls(cfg.initial_sparsity, cfg.sparsity, start, max(1, span // every), every)

    def __call__(self, step: int) -> float:
        """Sparsity to use at `step`."""
        return cubic_sparsity(step, self.initial, self.final, self.start_step, self.n_updates, self.every)

    @property
    def end_step(self) -> int:
        """The first step at the final sparsity."""
        return self.start_step + self.n_updates * self.every


# ------------------------------------------------------------------------------------------------- masks


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


# -------------------------------------------------------------------------------------------- structured


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
            loss = _loss(model, batch, loss_fn, device)
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


# ----------------------------------------------------------------------------------------------- training


def _loss(model: nn.Module, batch: dict[str, torch.Tensor], loss_fn: Callable[..., torch.Tensor], device: str) -> Any:
    """Forward one collated batch on `device` and return the (KD or CE) loss."""
    batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    teacher = batch.pop("teacher_logits", None)
    labels = batch.pop("labels")
    logits = model(**batch).logits
    return loss_fn(logits, teacher, labels)


def make_loss(cfg: PruneConfig, with_teacher: bool) -> Callable[..., torch.Tensor]:
    """distill's KD loss when a teacher is given, else plain cross-entropy."""

    def loss_fn(logits: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        if with_teacher and teacher is not None:
            return distillation_loss(logits, teacher.to(logits.dtype), labels, cfg.alpha, cfg.temperature)
        return nn.functional.cross_entropy(logits, labels)

    return loss_fn


def collator(tokenizer: Any) -> Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]:
    """Pad a list of rows; carries precomputed teacher logits along when the rows have them."""
    from transformers import DataCollatorWithPadding

    pad = DataCollatorWithPadding(tokenizer)

    def collate(rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = pad([{k: v for k, v in r.items() if k != "teacher_logits"} for r in rows])
        if "teacher_logits" in rows[0]:
            batch["teacher_logits"] = torch.stack([r["teacher_logits"] for r in rows])
        return dict(batch)

    return collate


def steps_for(n_examples: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of `epochs` passes over `n_examples` (the last batch of an epoch may be short)."""
    return max(1, math.ceil(epochs * math.ceil(n_examples / batch_size)))


def fit(
    model: nn.Module,
    dataset: Any,
    collate: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]],
    cfg: PruneConfig,
    loss_fn: Callable[..., torch.Tensor],
    device: str,
    pruner: UnstructuredPruner | None = None,
    desc: str = "fine-tune",
) -> dict[str, float]:
    """AdamW + linear warmup/decay for cfg.epochs; the pruner (if any) sets sparsity and re-masks each step."""
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    generator = torch.Generator().manual_seed(cfg.seed)
    loader = DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate, generator=generator)
    total = steps_for(len(dataset), cfg.batch_size, cfg.epochs)
    scores = {id(p) for p in pruner.scores()} if pruner is not None else set()
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad and id(p) not in scores]
    groups = [
        {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},  # biases, LayerNorm
    ]
    if scores:
        groups.append({"params": pruner.scores(), "weight_decay": 0.0, "lr": cfg.scores_learning_rate})
    optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    warmup = int(cfg.warmup_ratio * total)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    model.to(device).train()
    step, running = 0, 0.0
    with tqdm(total=total, desc=desc, leave=False) as bar:
        while step < total:
            for batch in loader:
                if step >= total:
                    break
                if pruner is not None:
                    pruner.step(step)
                loss = _loss(model, batch, loss_fn, device)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.max_grad_norm:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                if pruner is not None:
                    pruner.after_step()
                step += 1
                bar.update()
                if step % 20 == 0 or step == total:  # .item() syncs the GPU: not every step
                    running = loss.item()
                    bar.set_postfix(loss=f"{running:.4f}", sparsity=f"{pruner.sparsity if pruner else 0:.3f}")
    model.eval()
    logger.info("%s: %d steps, last loss %.4f", desc, total, running)
    return {"steps": total, "last_loss": running}


# -------------------------------------------------------------------------------------------- measurement


def _numel(value: Any) -> int:
    """Element count of a torch tensor or a numpy array."""
    return int(value.numel()) if isinstance(value, torch.Tensor) else int(value.size)


def _nbytes(value: Any) -> int:
    """Bytes of a torch tensor or a numpy array."""
    return _numel(value) * value.element_size() if isinstance(value, torch.Tensor) else int(value.nbytes)


def _is_encoder_linear_weight(key: str) -> bool:
    """Whether a state-dict key is the weight of one of the pruned encoder Linear layers."""
    return key.endswith(".weight") and bool(ENCODER_LINEAR.search(key.removesuffix(".weight")))


def weight_stats(state: dict[str, Any]) -> dict[str, Any]:
    """Counts of a state dict (torch or numpy arrays): encoder Linear weights (the pruned scope) and all tensors."""
    enc = enc_nonzero = total = total_nonzero = 0
    for key, value in state.items():
        n, nz = _numel(value), int((value != 0).sum())
        total += n
        total_nonzero += nz
        if _is_encoder_linear_weight(key):
            enc += n
            enc_nonzero += nz
    return {
        "encoder_linear_params": enc,
        "encoder_linear_nonzero": enc_nonzero,
        "sparsity": 1.0 - enc_nonzero / enc if enc else 0.0,
        "total_params": total,
        "total_nonzero": total_nonzero,
    }


def package_weight_stats(package_dir: Path) -> dict[str, Any]:
    """weight_stats of a package's model.safetensors (sparsity = zero share of its encoder Linear weights)."""
    from safetensors.numpy import load_file

    return weight_stats(load_file(str(Path(package_dir) / "model.safetensors")))


def csr_bytes(state: dict[str, Any]) -> int:
    """Bytes if encoder Linear weights were stored as CSR (fp32 values, int32 column indices and row pointers)."""
    size = 0
    for key, value in state.items():
        if _is_encoder_linear_weight(key):
            size += int((value != 0).sum()) * (4 + 4) + (value.shape[0] + 1) * 4
        else:
            size += _nbytes(value)
    return size


def gzip_size(path: Path, level: int = GZIP_LEVEL) -> int:
    """Size in bytes of the file compressed as gzip at `level` (streamed, nothing written)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31 = gzip container
    size = 0
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            size += len(compressor.compress(block))
    return size + len(compressor.flush())


def compressed_sizes(package_dir: Path) -> dict[str, dict[str, int]]:
    """{file: {bytes, gzip_bytes}} for each weights file present in the package."""
    out = {}
    for name in WEIGHT_FILES:
        path = Path(package_dir) / name
        if path.is_file():
            out[name] = {"bytes": path.stat().st_size, "gzip_bytes": gzip_size(path)}
    return out


def record_compressed_sizes(package_dir: Path) -> dict[str, dict[str, int]]:
    """Store compressed_sizes in the manifest's source.pruning (after export/quantize added the ONNX files)."""
    manifest = read_manifest(package_dir)
    sizes = compressed_sizes(package_dir)
    source = dict(manifest.source)
    source.setdefault("pruning", {})["compressed"] = sizes
    update_manifest(package_dir, source=source)
    return sizes


# ---------------------------------------------------------------------------------------------- pipeline


def keep_source_tokenizer(source_dir: Path, package_dir: Path) -> None:
    """Give the package its source's tokenizer files byte for byte (and re-hash).

    Pruning never touches the tokenizer, but another transformers version (e.g. 5.x on a GPU machine)
    re-serializes it differently; the serving tokenizer must stay exactly the source's.
    """
    import shutil

    for name in TOKENIZER_FILES:
        src, dst = Path(source_dir) / name, Path(package_dir) / name
        if src.is_file():
            shutil.copyfile(src, dst)
        elif dst.is_file():
            dst.unlink()
    refresh_manifest(package_dir)


def load_model(package_dir: Path) -> tuple[Any, Any]:
    """Classifier (fp32) + tokenizer of a package, safetensors only."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if not (Path(package_dir) / "model.safetensors").is_file():
        raise FileNotFoundError(f"no model package at {package_dir} (model.safetensors missing)")
    tokenizer = AutoTokenizer.from_pretrained(package_dir)
    # fp32 whatever the checkpoint's dtype: transformers 5 defaults to the stored dtype.
    model = AutoModelForSequenceClassification.from_pretrained(package_dir, use_safetensors=True, dtype=torch.float32)
    return model.eval(), tokenizer


def _labels(model: Any) -> list[str]:
    """The model's labels in logit order."""
    return [model.config.id2label[i] for i in range(model.config.num_labels)]


def _train_set(cfg: PruneConfig, data: ClincData, model: Any, tokenizer: Any, max_length: int, device: str) -> Any:
    """The (sub-sampled) train split, encoded, with teacher logits attached when a teacher is given."""
    labels = _labels(model)
    if set(labels) != set(data.labels):
        raise ValueError(f"the labels of {cfg.model_dir} differ from the dataset's; prune a model trained on it")
    label2id = {label: i for i, label in enumerate(labels)}
    train = data.train
    if cfg.max_train_examples is not None:
        train = train.subset(cfg.max_train_examples, cfg.seed)
    if cfg.teacher_dir is None:
        return EncodedSplit(train, tokenizer, label2id, max_length)
    teacher, teacher_tok = load_model(cfg.teacher_dir)
    check_same_tokenizer(teacher_tok, tokenizer, str(cfg.model_dir))
    if _labels(teacher) != labels:
        raise ValueError(f"teacher {cfg.teacher_dir} orders its labels differently from {cfg.model_dir}")
    teacher.to(device)  # only for this one pass over the train split

    def compute() -> torch.Tensor:
        return teacher_logits(teacher, EncodedSplit(train, tokenizer, label2id, max_length), tokenizer)

    if cfg.logits_cache is None:
        return DistillSplit(train, tokenizer, label2id, max_length, compute())
    # The key is the teacher's files: its tokenizer is the one used here, since check_same_tokenizer passed.
    logits, _ = cached_logits(cfg.logits_cache, [cfg.teacher_dir], train.texts, max_length, compute)
    return DistillSplit(train, tokenizer, label2id, max_length, logits)


def _importance_batches(dataset: Any, collate: Callable, cfg: PruneConfig) -> list[dict[str, torch.Tensor]]:
    """A seeded random subset of `importance_examples` rows, collated into batches."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(cfg.seed))
    rows = [dataset[int(i)] for i in order[: cfg.importance_examples]]
    return [collate(rows[i : i + cfg.batch_size]) for i in range(0, len(rows), cfg.batch_size)]


def prune(cfg: PruneConfig, data: ClincData | None = None) -> Path:
    """Prune cfg.model_dir with cfg.method, fine-tune, and save a plain (servable) package at cfg.output_dir."""
    from transformers import set_seed

    from compression.distill import accuracy

    cfg.validate()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    data = data or load_clinc()
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    source_manifest = read_manifest(cfg.model_dir)
    model, tokenizer = load_model(cfg.model_dir)
    if getattr(model.config, "pruned_heads", None):
        raise ValueError(f"{cfg.model_dir} is already structured-pruned; prune its unpruned source instead")
    max_length = source_manifest.max_length
    dataset = _train_set(cfg, data, model, tokenizer, max_length, device)
    collate = collator(tokenizer)
    loss_fn = make_loss(cfg, cfg.teacher_dir is not None)
    before = weight_stats(model.state_dict())
    total = steps_for(len(dataset), cfg.batch_size, cfg.epochs)
    logger.info("pruning %s (%s) on %s: %d examples, %d steps", cfg.model_dir, cfg.method, device, len(dataset), total)
    details: dict[str, Any] = {}
    model.to(device)
    if cfg.method == "structured":
        batches = _importance_batches(dataset, collate, cfg)
        head_imp, ffn_imp = importance_scores(model, batches, loss_fn, device)
        details = structured_prune_(model, head_imp, ffn_imp, cfg.heads_per_layer, cfg.ffn_keep)
        details |= {
            "importance": "heads: |dL/d head gate| (Michel et al. 2019); FFN neurons: |sum a * dL/da| "
            "(gradient x activation); summed over batches of the train split",
            "importance_examples": sum(len(b["labels"]) for b in batches),
            "head_importance": [[round(float(x), 6) for x in row] for row in head_imp],
        }
        fit(model, dataset, collate, cfg, loss_fn, device, desc="recovery fine-tune")
    else:
        schedule = Schedule.over(cfg, total)
        pruner = UnstructuredPruner(model, cfg.method, schedule)
        fit(model, dataset, collate, cfg, loss_fn, device, pruner, desc=f"{cfg.method} pruning")
        pruner.finalize()
        details = {
            "scope": "encoder Linear weights (attention query/key/value/output, FFN intermediate/output)",
            "mask": "per-matrix top-k" + (" of |W|" if cfg.method == "magnitude" else " of learned scores (STE)"),
            "schedule": {**asdict(schedule), "end_step": schedule.end_step, "total_steps": total},
        }
    model.cpu().eval()
    label2id = {label: i for i, label in enumerate(_labels(model))}
    val_acc = accuracy(model, tokenizer, data.validation, label2id, max_length)
    state = model.state_dict()
    after = weight_stats(state)
    logger.info(
        "%s: validation accuracy %.4f, encoder Linear sparsity %.4f, %d -> %d nonzero encoder Linear weights",
        cfg.name,
        val_acc,
        after["sparsity"],
        before["encoder_linear_nonzero"],
        after["encoder_linear_nonzero"],
    )
    hyper = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    pruning = {
        "method": cfg.method,
        "target_sparsity": cfg.sparsity if cfg.method != "structured" else None,
        **after,
        "dense": before,
        "remaining_encoder_linear_fraction": after["encoder_linear_nonzero"] / before["encoder_linear_params"],
        "csr_bytes": csr_bytes(state),
        "csr_note": "encoder Linear weights as CSR (fp32 values + int32 indices), other tensors dense fp32",
        **details,
    }
    source = {
        "base_model": str(cfg.model_dir),
        "teacher": str(cfg.teacher_dir) if cfg.teacher_dir else None,
        "dataset": data.source,
        "step": "prune",
        "hyperparameters": hyper,
        "validation_accuracy": val_acc,
        "pruning": pruning,
    }
    save_torch_package(
        model,
        tokenizer,
        cfg.output_dir,
        name=cfg.name,
        labels=_labels(model),
        oos_label=source_manifest.oos_label,
        domains=data.domains,
        max_length=max_length,
        source=source,
    )
    keep_source_tokenizer(cfg.model_dir, cfg.output_dir)
    record_compressed_sizes(cfg.output_dir)
    return cfg.output_dir
