"""Prune a package end to end: load it, build the train set (with teacher logits), prune, train, save."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from app.package import Manifest, read_manifest
from compression.config import PruneConfig
from compression.data import ClincData, load_clinc
from compression.distill import DistillSplit, check_same_tokenizer, teacher_logits
from compression.finetune import EncodedSplit
from compression.packaging import TOKENIZER_FILES, missing_input, refresh_manifest, save_torch_package
from compression.prune.masks import UnstructuredPruner
from compression.prune.schedule import Schedule
from compression.prune.sizes import csr_bytes, record_compressed_sizes, weight_stats
from compression.prune.structured import importance_scores, make_loss, structured_prune_
from compression.prune.train import collator, fit, steps_for
from compression.teacher_cache import cached_logits

logger = logging.getLogger(__name__)


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
        raise missing_input(package_dir, "model.safetensors", "no model package there to prune")
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


def prune_structured(cfg: PruneConfig, model: Any, dataset: Any, collate: Callable, device: str) -> dict[str, Any]:
    """Drop the least important heads and FFN neurons, then recovery-train; returns the manifest's details."""
    batches = _importance_batches(dataset, collate, cfg)
    loss_fn = make_loss(cfg, cfg.teacher_dir is not None)
    head_imp, ffn_imp = importance_scores(model, batches, loss_fn, device)
    details = structured_prune_(model, head_imp, ffn_imp, cfg.heads_per_layer, cfg.ffn_keep)
    details |= {
        "importance": "heads: |dL/d head gate| (Michel et al. 2019); FFN neurons: |sum a * dL/da| "
        "(gradient x activation); summed over batches of the train split",
        "importance_examples": sum(len(b["labels"]) for b in batches),
        "head_importance": [[round(float(x), 6) for x in row] for row in head_imp],
    }
    fit(model, dataset, collate, cfg, device, desc="recovery fine-tune")
    return details


def prune_unstructured(cfg: PruneConfig, model: Any, dataset: Any, collate: Callable, device: str) -> dict[str, Any]:
    """Train with masks raised along the cubic schedule, then bake them in; returns the manifest's details."""
    total = steps_for(len(dataset), cfg.batch_size, cfg.epochs)
    schedule = Schedule.over(cfg, total)
    pruner = UnstructuredPruner(model, cfg.method, schedule)
    fit(model, dataset, collate, cfg, device, pruner, desc=f"{cfg.method} pruning")
    pruner.finalize()
    return {
        "scope": "encoder Linear weights (attention query/key/value/output, FFN intermediate/output)",
        "mask": "per-matrix top-k" + (" of |W|" if cfg.method == "magnitude" else " of learned scores (STE)"),
        "schedule": {**asdict(schedule), "end_step": schedule.end_step, "total_steps": total},
    }


def prune(cfg: PruneConfig, data: ClincData | None = None) -> Path:
    """Prune cfg.model_dir with cfg.method, fine-tune, and save a plain (servable) package at cfg.output_dir."""
    from transformers import set_seed

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
    dataset = _train_set(cfg, data, model, tokenizer, source_manifest.max_length, device)
    before = weight_stats(model.state_dict())
    total = steps_for(len(dataset), cfg.batch_size, cfg.epochs)
    logger.info("pruning %s (%s) on %s: %d examples, %d steps", cfg.model_dir, cfg.method, device, len(dataset), total)
    model.to(device)
    method = prune_structured if cfg.method == "structured" else prune_unstructured
    details = method(cfg, model, dataset, collator(tokenizer), device)
    model.cpu().eval()
    save_pruned(cfg, data, model, tokenizer, source_manifest, before, details)
    return cfg.output_dir


def save_pruned(
    cfg: PruneConfig,
    data: ClincData,
    model: Any,
    tokenizer: Any,
    source: Manifest,
    before: dict[str, Any],
    details: dict[str, Any],
) -> None:
    """Measure the pruned model (validation accuracy, sparsity, CSR and gzip sizes) and save it as a package.

    `before`: weight_stats of the dense model; `details`: the method's own record.
    """
    from compression.distill import accuracy

    labels = _labels(model)
    val_acc = accuracy(model, tokenizer, data.validation, {x: i for i, x in enumerate(labels)}, source.max_length)
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
    hyper = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    manifest_source = {
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
        oos_label=source.oos_label,
        domains=data.domains,
        max_length=source.max_length,
        source=manifest_source,
    )
    keep_source_tokenizer(cfg.model_dir, cfg.output_dir)
    record_compressed_sizes(cfg.output_dir)
