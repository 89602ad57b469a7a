"""One benchmark row: a package x backend's accuracy, sizes and sparsity; the timing-only BERT-base row."""

from __future__ import annotations

import functools
import gc
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from app.backends.base import Backend
from app.package import BACKEND_FILES, Manifest, package_size_mb
from compression.benchmark.config import RATIO_KEYS, SCORE_KEYS, SPARSITY_KEYS, TIMING_ONLY_LABEL
from compression.data import Split
from compression.evaluate import scores, split_logits, summarize_ms, timed_ms, warm_up


def time_interleaved(
    backends: Sequence[Backend], queries: list[str], runs: int, warmup: int, rounds: int, block_warmup: int
) -> list[dict[str, float]]:
    """Single-query latency of every backend, timed round-robin in blocks so drift and load hit all alike.

    Each backend first gets `warmup` untimed calls; then `runs` timed calls are split into `rounds` blocks.
    In each round every backend runs its block (the starting backend rotates), preceded by `block_warmup`
    untimed calls to refill caches another model evicted. Every backend times the same query sequence.
    """
    if runs < 1:
        raise ValueError(f"latency runs must be >= 1, got {runs}")
    n = len(backends)
    for backend in backends:
        warm_up(backend, queries, warmup)
    rounds = max(1, min(rounds, runs))
    bounds = [runs * r // rounds for r in range(rounds + 1)]
    times: list[list[float]] = [[] for _ in backends]
    gc.collect()
    for r in tqdm(range(rounds), desc="latency (round-robin)", leave=False):
        for j in [(r + k) % n for k in range(n)]:
            warm_up(backends[j], queries, block_warmup, first=bounds[r])
            times[j] += timed_ms(backends[j], queries, bounds[r], bounds[r + 1])
    return [summarize_ms(t) for t in times]


def bert_base_config(num_labels: int) -> Any:
    """BertConfig defaults (12 layers, hidden 768, 12 heads, intermediate 3072, vocab 30522) with `num_labels`."""
    from transformers import BertConfig

    return BertConfig(num_labels=num_labels)


def random_bert_backend(config: Any, tokenizer_dir: Path, max_length: int, num_threads: int, seed: int) -> Backend:
    """A TorchBackend around a randomly initialised BertForSequenceClassification (same predict path)."""
    import torch

    from app.backends.torch import TorchBackend

    class RandomBertBackend(TorchBackend):
        """TorchBackend whose model is built from a config with seeded random weights."""

        def load(self) -> None:
            """Build the model; refuse a tokenizer whose ids the embedding cannot hold."""
            from transformers import BertForSequenceClassification

            assert self.encoder is not None
            vocab = self.encoder.tokenizer.get_vocab_size()
            if vocab > config.vocab_size:
                raise ValueError(f"tokenizer in {tokenizer_dir} has {vocab} tokens > config vocab {config.vocab_size}")
            if self.num_threads:
                torch.set_num_threads(self.num_threads)
            torch.manual_seed(seed)
            self.model = BertForSequenceClassification(config).eval()

    labels = [f"label_{i}" for i in range(config.num_labels)]
    manifest = Manifest(name="bert-base-shaped", labels=labels, oos_label=labels[0], max_length=max_length)
    return RandomBertBackend(tokenizer_dir, manifest, num_threads)


def safetensors_size_mb(model: Any) -> float:
    """Size in MB (10^6 bytes) of the model saved as fp32 safetensors (save_pretrained to a temp dir)."""
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        return sum(p.stat().st_size for p in Path(tmp).glob("*.safetensors")) / 1e6


@functools.cache
def _gzip_mb(path: str, mtime_ns: int) -> float:
    """gzip -6 size of a file in MB (cached per file version: packages share files across rows)."""
    from compression.prune.sizes import gzip_size

    return gzip_size(Path(path)) / 1e6


@functools.cache
def _package_sparsity(package_dir: str, mtime_ns: int) -> dict[str, Any]:
    """SPARSITY_KEYS of a package's model.safetensors (cached per file version)."""
    from compression.prune.sizes import package_weight_stats

    stats = package_weight_stats(Path(package_dir))
    return {k: stats[k] for k in SPARSITY_KEYS}


def _size_fields(package_dir: Path, backend: str, gzip: bool) -> dict[str, Any]:
    """Size on disk, gzip size and encoder Linear sparsity fields of one package x backend."""
    path = Path(package_dir) / BACKEND_FILES[backend]
    weights = Path(package_dir) / "model.safetensors"
    row: dict[str, Any] = {"size_mb": package_size_mb(package_dir, backend), "size_file": BACKEND_FILES[backend]}
    row["gzip_size_mb"] = _gzip_mb(str(path), path.stat().st_mtime_ns) if gzip else None
    if weights.is_file():
        row |= _package_sparsity(str(package_dir), weights.stat().st_mtime_ns)
    else:
        row |= dict.fromkeys(SPARSITY_KEYS)
    return row


def timing_row(backend: Backend, tokenizer_dir: Path) -> dict[str, Any]:
    """The row fields of the timing-only model (no accuracy)."""
    from compression.prune.sizes import weight_stats

    model = backend.model  # type: ignore[attr-defined]
    stats = weight_stats(model.state_dict())
    return {
        "label": TIMING_ONLY_LABEL,
        "package": TIMING_ONLY_LABEL,
        "package_dir": None,
        "backend": "torch",
        "precision": "fp32",
        "timing_only": True,
        "oos_score": None,
        "oos_threshold": None,
        "calibrated": None,
        **dict.fromkeys(SCORE_KEYS),
        "size_mb": safetensors_size_mb(model),
        "size_file": "fp32 safetensors written by save_pretrained to a temp dir",
        "gzip_size_mb": None,
        **{k: stats[k] for k in SPARSITY_KEYS},
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "num_labels": model.config.num_labels,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "tokenizer_dir": str(tokenizer_dir),
    }


def timing_only_row(
    config: Any,
    tokenizer_dir: Path,
    queries: list[str],
    runs: int,
    warmup: int = 5,
    num_threads: int = 0,
    seed: int = 0,
    max_length: int = 64,
) -> dict[str, Any]:
    """Benchmark row of a random-weight BertForSequenceClassification(config) on its own: size and latency."""
    backend = random_bert_backend(config, Path(tokenizer_dir), max_length, num_threads, seed)
    row = timing_row(backend, Path(tokenizer_dir))
    (lat,) = time_interleaved([backend], queries, runs, warmup, rounds=1, block_warmup=0)
    return row | latency_fields(lat, runs) | dict.fromkeys(RATIO_KEYS) | {"is_reference": False}


def latency_fields(lat: dict[str, float], runs: int) -> dict[str, Any]:
    """summarize_ms output -> row fields."""
    return {f"latency_{k}_ms": lat[k] for k in ("mean", "std", "p50", "p99")} | {"latency_runs": runs}


def package_row(
    package_dir: Path, manifest: Manifest, backend: Backend, test: Split, batch_size: int, gzip: bool = True
) -> dict[str, Any]:
    """Accuracy and size fields of one package x backend (latency is added later, for all rows at once)."""
    logits = split_logits(backend, test, batch_size, desc=f"{manifest.name}/{backend.name}")
    row: dict[str, Any] = {
        "label": f"{manifest.name}/{backend.name}",
        "package": manifest.name,
        "package_dir": str(package_dir),
        "backend": backend.name,
        "precision": backend.precision,
        "timing_only": False,
        "oos_score": manifest.oos_score,
        "oos_threshold": manifest.oos_threshold,
        "calibrated": "calibration" in manifest.source,
    }
    row |= scores(logits, test.labels, manifest, manifest.oos_threshold)
    row |= _size_fields(package_dir, backend.name, gzip)
    return row


def add_ratios(rows: list[dict[str, Any]], reference: dict[str, Any] | None) -> None:
    """Size ratio (x smaller), p50 speed-up (x faster) and accuracy delta (points) of each row vs the reference."""
    for row in rows:
        row["is_reference"] = row is reference
        if reference is None:
            row |= dict.fromkeys(RATIO_KEYS)
            continue
        row["size_ratio_vs_ref"] = reference["size_mb"] / row["size_mb"]
        row["speedup_vs_ref"] = reference["latency_p50_ms"] / row["latency_p50_ms"]
        acc, ref_acc = row["accuracy"], reference["accuracy"]
        row["accuracy_delta_pts"] = None if acc is None or ref_acc is None else 100 * (acc - ref_acc)
