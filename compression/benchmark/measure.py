"""Benchmark every package x backend in one process: select the rows, measure them, time them round-robin."""

from __future__ import annotations

import logging
import math
import os
import platform
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from app.backends.base import Backend, load_backend
from app.cpu import cpu_flags, int8_weights_saturate
from app.package import Manifest, PackageError, read_manifest
from compression.benchmark.config import (
    BERT_BASE_MB,
    REFERENCE_BACKEND,
    REFERENCE_NAMES,
    ROW_KEYS,
    BenchmarkConfig,
    effective_threads,
    find_packages,
    resolve_reference,
)
from compression.benchmark.rows import (
    add_ratios,
    bert_base_config,
    latency_fields,
    package_row,
    random_bert_backend,
    time_interleaved,
    timing_row,
)
from compression.data import Split
from compression.evaluate import latency_queries

logger = logging.getLogger(__name__)


def machine_info() -> dict[str, Any]:
    """CPU model, avx512_vnni support, the int8 kernels and core count (from /proc/cpuinfo where available)."""
    model: str | None = None
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
                break
    model = model or platform.processor() or platform.machine()
    return {
        "cpu_model": model,
        "avx512_vnni": "avx512_vnni" in (cpu_flags() or ()),
        # onnx-int8 rows ran ORT's exact, slower uint8 kernels for int8 weights (app.backends.onnx).
        "int8_weights_as_uint8": int8_weights_saturate(),
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
    }


def _versions() -> dict[str, str]:
    """Versions of the libraries that do the timed work."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "onnxruntime", "transformers", "tokenizers", "numpy"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def _select_rows(cfg: BenchmarkConfig) -> tuple[list[tuple[Path, Manifest, str]], Path | None, list[str]]:
    """(package, manifest, backend) pairs to run, the reference package, and skipped packages."""
    explicit = bool(cfg.packages)
    dirs = [Path(p).resolve() for p in (cfg.packages or find_packages(cfg.artifacts))]
    manifests: dict[Path, Manifest] = {}
    skipped: list[str] = []
    for d in dict.fromkeys(dirs):
        try:
            manifests[d] = read_manifest(d)
        except PackageError as exc:
            if explicit:
                raise
            logger.warning("skipping %s: %s", d, exc)
            skipped.append(f"{d}: {exc}")
    ref_dir = resolve_reference(manifests, cfg.reference)
    if not manifests and ref_dir is None:
        raise ValueError(f"no model package found under {cfg.artifacts}")
    if ref_dir in manifests:  # the reference package's rows first
        manifests = {ref_dir: manifests[ref_dir], **manifests}
    pairs = [(d, m, b) for d, m in manifests.items() for b in m.backends if cfg.backends is None or b in cfg.backends]
    if ref_dir is not None:
        ref_manifest = manifests.get(ref_dir) or read_manifest(ref_dir)
        if REFERENCE_BACKEND not in ref_manifest.backends:
            raise PackageError(f"reference package {ref_dir} has no {REFERENCE_BACKEND!r} backend")
        if not any(d == ref_dir and b == REFERENCE_BACKEND for d, _, b in pairs):
            logger.info("adding the reference row %s/%s (ratios need it in the same run)", ref_dir, REFERENCE_BACKEND)
            pairs.insert(0, (ref_dir, ref_manifest, REFERENCE_BACKEND))
    else:
        logger.warning("no package named %s and no --reference: ratio columns will be empty", REFERENCE_NAMES)
    if not pairs:
        raise ValueError(f"no package x backend matches backends={cfg.backends} in {[str(d) for d in manifests]}")
    return pairs, ref_dir, skipped


def measure_rows(
    cfg: BenchmarkConfig, pairs: list[tuple[Path, Manifest, str]], ref_dir: Path | None, test: Split, threads: int
) -> tuple[list[dict[str, Any]], list[Backend], dict[str, Any] | None, list[str]]:
    """Accuracy and size of every package x backend that loads: (rows, their backends, the reference row, skipped)."""
    rows: list[dict[str, Any]] = []
    backends: list[Backend] = []
    reference: dict[str, Any] | None = None
    skipped: list[str] = []
    for package_dir, manifest, name in tqdm(pairs, desc="benchmark rows"):
        is_ref = package_dir == ref_dir and name == REFERENCE_BACKEND
        try:
            backend = load_backend(name, package_dir, threads)
        except PackageError as exc:
            if is_ref:
                raise
            logger.warning("skipping %s/%s: %s", package_dir, name, exc)
            skipped.append(f"{package_dir}/{name}: {exc}")
            continue
        row = package_row(package_dir, manifest, backend, test, cfg.batch_size, cfg.gzip)
        logger.info("%s: accuracy %.4f, size %.1f MB", row["label"], row["accuracy"], row["size_mb"])
        rows.append(row)
        backends.append(backend)
        if is_ref:
            reference = row
    if cfg.bert_base and (reference is None or reference["size_mb"] < BERT_BASE_MB):
        tok_dir = ref_dir or pairs[0][0]  # the teacher's tokenizer; its label count (151 on CLINC150)
        tok_manifest = read_manifest(tok_dir)
        config = bert_base_config(len(tok_manifest.labels))
        backend = random_bert_backend(config, tok_dir, tok_manifest.max_length, threads, cfg.seed)
        rows.append(timing_row(backend, tok_dir))
        backends.append(backend)
    return rows, backends, reference, skipped


def run_benchmark(cfg: BenchmarkConfig, test: Split, data_source: str) -> dict[str, Any]:
    """Benchmark every selected package x backend (plus the timing-only row) in this process."""
    import torch

    pairs, ref_dir, skipped = _select_rows(cfg)
    if cfg.latency_runs < 100:
        logger.warning("only %d latency runs per row: p99 is not meaningful (use >= 100)", cfg.latency_runs)
    threads = effective_threads(cfg.num_threads)
    previous_threads = torch.get_num_threads()
    load_before = os.getloadavg()
    torch.set_num_threads(threads)
    try:
        rows, backends, reference, not_loaded = measure_rows(cfg, pairs, ref_dir, test, threads)
        skipped += not_loaded
        queries = latency_queries(test)
        latencies = time_interleaved(backends, queries, cfg.latency_runs, cfg.warmup_runs, cfg.rounds, cfg.block_warmup)
        for row, lat in zip(rows, latencies, strict=True):
            row |= latency_fields(lat, cfg.latency_runs)
        add_ratios(rows, reference)
        torch_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(previous_threads)
    metadata = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        **machine_info(),
        "threads": threads,
        "torch_num_threads": torch_threads,
        "versions": _versions(),
        "latency_runs": cfg.latency_runs,
        "warmup_runs": cfg.warmup_runs,
        "rounds": max(1, min(cfg.rounds, cfg.latency_runs)),
        "block_warmup": cfg.block_warmup,
        "latency_queries": len(queries),
        "latency_method": (
            "single-query predict() = tokenize + infer + softmax, time.perf_counter; all rows in one process, "
            "timed round-robin in blocks with a rotating start; comparable only within this run"
        ),
        "data_source": data_source,
        "test_size": len(test),
        "reference": None if reference is None else {"label": reference["label"], "package_dir": str(ref_dir)},
        "loadavg_before": list(load_before),
        "loadavg_after": list(os.getloadavg()),
        "skipped": skipped,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
    }
    metadata["config"]["packages"] = [str(p) for p in cfg.packages]
    return {"metadata": metadata, "rows": [_ordered(row) for row in rows]}


def _ordered(row: dict[str, Any]) -> dict[str, Any]:
    """ROW_KEYS first, extra keys after; NaN -> None so the JSON stays valid."""
    keys = [*ROW_KEYS, *(k for k in row if k not in ROW_KEYS)]
    return {k: None if isinstance(row.get(k), float) and math.isnan(row[k]) else row.get(k) for k in keys}
