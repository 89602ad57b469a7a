"""Evaluate a package on its test split through the serving backends: accuracy, size, latency."""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from app.backends.base import Backend, load_backend
from app.decision import OosScore, decide
from app.package import BackendMetrics, Manifest, PackageError, package_size_mb, read_manifest, update_manifest
from compression.data import Split

logger = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """What to evaluate and how to time it."""

    package_dir: Path = Path("artifacts/teacher")
    backends: tuple[str, ...] = ("torch", "torch-int8", "onnx", "onnx-int8")
    batch_size: int = 64
    latency_runs: int = 200
    warmup_runs: int = 20
    num_threads: int = 0


def split_logits(backend: Backend, split: Split, batch_size: int, desc: str = "") -> np.ndarray:
    """Logits for every text of a split, batched (sorted by length to pad less)."""
    order = np.argsort([len(t) for t in split.texts], kind="stable")
    out = np.empty((len(split), len(backend.manifest.labels)), dtype=np.float32)
    for start in tqdm(range(0, len(order), batch_size), desc=desc or backend.name, leave=False):
        idx = order[start : start + batch_size]
        out[idx] = backend.predict_logits([split.texts[i] for i in idx])
    return out


def scores(
    logits: np.ndarray, gold: list[str], manifest: Manifest, threshold: float, score: OosScore | None = None
) -> dict[str, float]:
    """Overall accuracy, in-scope accuracy and oos recall with the oos rule of the service.

    `score` defaults to the package's own oos score. oos recall is NaN (not available) without oos queries.
    """
    label2id = {label: i for i, label in enumerate(manifest.labels)}
    oos = label2id[manifest.oos_label]
    y = np.asarray([label2id[g] for g in gold])
    pred, _ = decide(logits, oos, threshold, score or manifest.oos_score)
    in_scope = y != oos
    return {
        "accuracy": float((pred == y).mean()),
        "in_scope_accuracy": float((pred[in_scope] == y[in_scope]).mean()),
        "oos_recall": float((pred[~in_scope] == oos).mean()) if (~in_scope).any() else float("nan"),
    }


def warm_up(backend: Backend, queries: list[str], calls: int, first: int = 0) -> None:
    """`calls` untimed single-query predictions, from query number `first` on (cycling through `queries`)."""
    for i in range(first, first + calls):
        backend.predict([queries[i % len(queries)]])


def timed_ms(backend: Backend, queries: list[str], first: int, stop: int) -> list[float]:
    """Milliseconds of each single-query prediction of query numbers first..stop-1 (cycling through `queries`)."""
    predict = backend.predict
    times = []
    for i in range(first, stop):
        query = [queries[i % len(queries)]]
        start = time.perf_counter()
        predict(query)
        times.append((time.perf_counter() - start) * 1000)
    return times


def latency_ms(backend: Backend, queries: list[str], runs: int, warmup: int) -> dict[str, float]:
    """Single-query latency (tokenize + infer + softmax) over `runs` timed calls after warm-up."""
    warm_up(backend, queries, warmup)
    return summarize_ms(timed_ms(backend, queries, 0, runs))


def summarize_ms(times: list[float]) -> dict[str, float]:
    """mean, std, p50 and p99 of latencies in ms (shared by evaluate and the benchmark)."""
    ordered = sorted(times)
    n = len(ordered)
    return {
        "mean": statistics.fmean(ordered),
        "std": statistics.pstdev(ordered),
        "p50": ordered[n // 2],
        "p99": ordered[min(n - 1, int(0.99 * n))],
    }


def latency_queries(test: Split, n: int = 100) -> list[str]:
    """A fixed, reproducible set of real test queries for timing."""
    return test.subset(n, seed=1234).texts


def evaluate(cfg: EvalConfig, test: Split) -> dict[str, dict[str, float]]:
    """Evaluate each available backend on the test split and store the figures in the manifest."""
    manifest = read_manifest(cfg.package_dir)
    queries = latency_queries(test)
    results: dict[str, dict[str, float]] = {}
    if not set(cfg.backends) & set(manifest.backends):
        raise PackageError(
            f"none of the backends {list(cfg.backends)} is in package {cfg.package_dir} (it has {manifest.backends})"
        )
    absent = [name for name in cfg.backends if name not in manifest.backends]
    if absent:  # one line for all of them: a slim package lacks three backends by design
        logger.warning("skipping %s: not in package %s", ", ".join(absent), cfg.package_dir)
    for name in (n for n in cfg.backends if n not in absent):
        backend = load_backend(name, cfg.package_dir, cfg.num_threads)
        logits = split_logits(backend, test, cfg.batch_size, desc=f"evaluate {name}")
        row = scores(logits, test.labels, manifest, manifest.oos_threshold)
        lat = latency_ms(backend, queries, cfg.latency_runs, cfg.warmup_runs)
        row |= {"size_mb": package_size_mb(cfg.package_dir, name), "latency_p50_ms": lat["p50"]}
        row |= {"latency_p99_ms": lat["p99"], "latency_mean_ms": lat["mean"], "latency_std_ms": lat["std"]}
        results[name] = row
        logger.info("%s: %s", name, {k: round(v, 4) for k, v in row.items()})
        del backend
    metrics = dict(manifest.metrics)
    for name, row in results.items():
        # NaN (oos recall of a test split without oos queries) is stored as null: not available.
        known = {k: None if np.isnan(v) else v for k, v in row.items() if k in BackendMetrics.model_fields}
        metrics[name] = BackendMetrics(**known)
    update_manifest(cfg.package_dir, metrics=metrics)
    return results


def _rate(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.4f}"


def format_table(results: dict[str, dict[str, float]]) -> str:
    """Markdown table of evaluate() results; n/a where a rate has no queries to be measured on."""
    lines = [
        "| backend | accuracy | in-scope acc | oos recall | size MB | p50 ms | p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {_rate(r['accuracy'])} | {_rate(r['in_scope_accuracy'])} | {_rate(r['oos_recall'])} | "
            f"{r['size_mb']:.1f} | {r['latency_p50_ms']:.2f} | {r['latency_p99_ms']:.2f} |"
        )
    return "\n".join(lines)
