"""PerformanceBenchmark done right: every package x backend in one process, one thread setting, one report.

For each row: accuracy / in-scope accuracy / oos recall on the test split with the package's calibrated
threshold, size on disk of the weights file the backend loads, single-query latency (tokenize + infer +
softmax) measured round-robin across all rows, and ratios to the reference row (the teacher's torch fp32).
A timing-only BERT-base-shaped row (random weights) gives a familiar yardstick. Timings are only comparable
within one run: same process, same machine, same background load.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import math
import os
import platform
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from app.backends.base import Backend, load_backend
from app.package import (
    BACKEND_FILES,
    MANIFEST,
    Manifest,
    PackageError,
    package_size_mb,
    read_manifest,
    without_machine_paths,
)
from compression.data import Split
from compression.evaluate import latency_queries, scores, split_logits, summarize_ms, timed_ms, warm_up

logger = logging.getLogger(__name__)

# The reference row is the first of these packages present: the BERT-base-class teacher, else the MiniLM one.
REFERENCE_NAMES = ("mpnet-teacher", "teacher")
# A reference at least this large (fp32 MB) is itself BERT-base-sized: no random-weights stand-in row then.
BERT_BASE_MB = 300.0
REFERENCE_BACKEND = "torch"
TIMING_ONLY_LABEL = "bert-base-shaped (timing only, random weights)"
SCORE_KEYS = ("accuracy", "in_scope_accuracy", "oos_recall")
LATENCY_KEYS = ("latency_mean_ms", "latency_std_ms", "latency_p50_ms", "latency_p99_ms")
RATIO_KEYS = ("size_ratio_vs_ref", "speedup_vs_ref", "accuracy_delta_pts")
# Zero share and counts of the encoder's Linear weights (the scope compression.prune prunes).
SPARSITY_KEYS = ("sparsity", "encoder_linear_params", "encoder_linear_nonzero")
ROW_KEYS = (
    "label",
    "package",
    "package_dir",
    "backend",
    "precision",
    "timing_only",
    "oos_score",
    "oos_threshold",
    "calibrated",
    *SCORE_KEYS,
    "size_mb",
    "size_file",
    "gzip_size_mb",
    *SPARSITY_KEYS,
    *LATENCY_KEYS,
    "latency_runs",
    *RATIO_KEYS,
    "is_reference",
)
MD_COLUMNS = (
    "package",
    "backend",
    "precision",
    "accuracy %",
    "in-scope acc %",
    "oos recall %",
    "size MB",
    "gzip MB",
    "p50 ms",
    "p99 ms",
    "mean±std ms",
    "size ratio (x smaller)",
    "speed-up (x faster, p50)",
    "Δ accuracy (pts)",
    "sparsity %",
    "enc. Linear nonzero (M)",
)


@dataclass
class BenchmarkConfig:
    """Which packages and backends to benchmark, and how to time them."""

    artifacts: Path = Path("artifacts")
    packages: tuple[Path, ...] = ()
    backends: tuple[str, ...] | None = None
    reference: Path | None = None
    num_threads: int = 0
    latency_runs: int = 200
    warmup_runs: int = 20
    rounds: int = 10
    block_warmup: int = 2
    batch_size: int = 64
    bert_base: bool = True
    gzip: bool = True  # gzip -6 each row's weights file (seconds per 100 MB): what sparsity saves on disk
    seed: int = 0
    output_dir: Path = Path("reports")


def find_packages(root: Path) -> list[Path]:
    """Every folder under `root` (recursively) that holds a manifest.json, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"artifacts folder not found: {root} (pass --artifacts or --packages)")
    return sorted(p.parent for p in root.rglob(MANIFEST) if not any(s.startswith(".") for s in p.parts))


def resolve_reference(manifests: dict[Path, Manifest], explicit: Path | None) -> Path | None:
    """The reference package: `explicit`, else the one package named "mpnet-teacher", else "teacher"."""
    if explicit is not None:
        return Path(explicit).resolve()
    for name in REFERENCE_NAMES:
        teachers = [p for p, m in manifests.items() if m.name == name]
        if len(teachers) > 1:
            # e.g. a quick test build next to the real one: prefer the folder that is itself called so.
            named = [p for p in teachers if p.name == name]
            if len(named) != 1:
                raise ValueError(
                    f"{len(teachers)} packages are named {name!r} ({[str(p) for p in teachers]}); "
                    "pass --reference PACKAGE_DIR"
                )
            logger.warning("several packages named %r; using %s as the reference", name, named[0])
            teachers = named
        if teachers:
            return teachers[0]
    return None


def effective_threads(num_threads: int) -> int:
    """The thread count actually used: `num_threads`, or every core this process may run on when 0."""
    if num_threads < 0:
        raise ValueError(f"num_threads must be >= 0, got {num_threads}")
    if num_threads:
        return num_threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_info() -> dict[str, Any]:
    """CPU model, avx512_vnni support and core count (from /proc/cpuinfo where available)."""
    model: str | None = None
    flags: set[str] = set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model is None:
                model = value.strip()
            elif key.strip() in ("flags", "Features") and not flags:
                flags = set(value.split())
    model = model or platform.processor() or platform.machine()
    return {
        "cpu_model": model,
        "avx512_vnni": "avx512_vnni" in flags,
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "hostname": platform.node(),
    }


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


def _random_bert_backend(config: Any, tokenizer_dir: Path, max_length: int, num_threads: int, seed: int) -> Backend:
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
    from compression.prune import gzip_size

    return gzip_size(Path(path)) / 1e6


@functools.cache
def _package_sparsity(package_dir: str, mtime_ns: int) -> dict[str, Any]:
    """SPARSITY_KEYS of a package's model.safetensors (cached per file version)."""
    from compression.prune import package_weight_stats

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


def _timing_row(backend: Backend, tokenizer_dir: Path) -> dict[str, Any]:
    """The row fields of the timing-only model (no accuracy)."""
    from compression.prune import weight_stats

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
    backend = _random_bert_backend(config, Path(tokenizer_dir), max_length, num_threads, seed)
    row = _timing_row(backend, Path(tokenizer_dir))
    (lat,) = time_interleaved([backend], queries, runs, warmup, rounds=1, block_warmup=0)
    return row | _latency_fields(lat, runs) | dict.fromkeys(RATIO_KEYS) | {"is_reference": False}


def _latency_fields(lat: dict[str, float], runs: int) -> dict[str, Any]:
    """summarize_ms output -> row fields."""
    return {f"latency_{k}_ms": lat[k] for k in ("mean", "std", "p50", "p99")} | {"latency_runs": runs}


def _package_row(
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
        rows: list[dict[str, Any]] = []
        backends: list[Backend] = []
        reference: dict[str, Any] | None = None
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
            row = _package_row(package_dir, manifest, backend, test, cfg.batch_size, cfg.gzip)
            logger.info("%s: accuracy %.4f, size %.1f MB", row["label"], row["accuracy"], row["size_mb"])
            rows.append(row)
            backends.append(backend)
            if is_ref:
                reference = row
        if cfg.bert_base and (reference is None or reference["size_mb"] < BERT_BASE_MB):
            tok_dir = ref_dir or pairs[0][0]  # the teacher's tokenizer; its label count (151 on CLINC150)
            tok_manifest = read_manifest(tok_dir)
            config = bert_base_config(len(tok_manifest.labels))
            backend = _random_bert_backend(config, tok_dir, tok_manifest.max_length, threads, cfg.seed)
            rows.append(_timing_row(backend, tok_dir))
            backends.append(backend)
        queries = latency_queries(test)
        latencies = time_interleaved(backends, queries, cfg.latency_runs, cfg.warmup_runs, cfg.rounds, cfg.block_warmup)
        for row, lat in zip(rows, latencies, strict=True):
            row |= _latency_fields(lat, cfg.latency_runs)
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


def _pct(x: float | None) -> str:
    """A fraction as a percentage cell."""
    return "–" if x is None else f"{100 * x:.2f}"


def _num(x: float | None, fmt: str) -> str:
    """A number cell, or a dash for None."""
    return "–" if x is None else format(x, fmt)


def format_markdown(report: dict[str, Any]) -> str:
    """Markdown report: a run header line, the table, and notes."""
    meta = report["metadata"]
    ref = meta["reference"]
    lines = [
        "# Benchmark",
        "",
        f"CPU: {meta['cpu_model']} (avx512_vnni: {'yes' if meta['avx512_vnni'] else 'no'}) · "
        f"threads: {meta['threads']} · date: {meta['date']} · torch {meta['versions']['torch']} · "
        f"onnxruntime {meta['versions']['onnxruntime']} · data: {meta['data_source']} ({meta['test_size']} test queries)",
        "",
        f"Reference: {ref['label'] if ref else 'none (ratios empty)'}. Latency: {meta['latency_runs']} single-query "
        f"runs per row after {meta['warmup_runs']} warm-up, round-robin in {meta['rounds']} blocks over "
        f"{meta['latency_queries']} fixed test queries. Timings are comparable only within one run.",
        "",
        "| " + " | ".join(MD_COLUMNS) + " |",
        "|" + "---|" * len(MD_COLUMNS),
    ]
    for r in report["rows"]:
        cells = [
            r["package"] + (" (ref)" if r["is_reference"] else ""),
            r["backend"],
            r["precision"],
            _pct(r["accuracy"]),
            _pct(r["in_scope_accuracy"]),
            _pct(r["oos_recall"]),
            f"{r['size_mb']:.1f}",
            _num(r.get("gzip_size_mb"), ".1f"),
            f"{r['latency_p50_ms']:.2f}",
            f"{r['latency_p99_ms']:.2f}",
            f"{r['latency_mean_ms']:.2f} ± {r['latency_std_ms']:.2f}",
            _num(r["size_ratio_vs_ref"], ".2f"),
            _num(r["speedup_vs_ref"], ".2f"),
            _num(r["accuracy_delta_pts"], "+.2f"),
            _pct(r.get("sparsity")),
            _num(None if r.get("encoder_linear_nonzero") is None else r["encoder_linear_nonzero"] / 1e6, ".2f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Size = the weights file the backend loads (torch-int8 quantizes at load time, so its file is the fp32 "
        "safetensors). Accuracy uses each package's calibrated oos rule (score and threshold). The bert-base-shaped row has random "
        "weights: its size is its fp32 safetensors file and it has no accuracy.",
        "",
        "gzip MB = that file compressed with gzip -6 (what unstructured sparsity saves on disk or download). "
        "Sparsity = share of zero weights in the encoder's Linear layers (attention q/k/v/output, FFN); "
        "enc. Linear nonzero = their nonzero weights in millions (structured pruning lowers it by shrinking the "
        "layers). ONNX Runtime on CPU runs zero weights densely: unstructured sparsity brings no speed-up.",
    ]
    rules = {r["package"]: (r["oos_score"], r["oos_threshold"]) for r in report["rows"] if r["oos_score"]}
    if rules:
        cells = [f"{name}: {score} < {threshold:.3f}" for name, (score, threshold) in rules.items()]
        lines += ["", "Oos rules (chosen on the validation split; oos below the threshold): " + "; ".join(cells) + "."]
    if meta["skipped"]:
        lines += ["", "Skipped: " + "; ".join(meta["skipped"])]
    return "\n".join(lines) + "\n"


BACKEND_MARKERS = {"torch": "o", "torch-int8": "D", "onnx": "s", "onnx-int8": "^"}


def package_colors(packages: list[str]) -> dict[str, tuple[float, float, float, float]]:
    """One distinct colour per package: tab10 up to 10 packages, tab20 up to 20, then an evenly sampled hue wheel."""
    from matplotlib import colormaps

    n = len(packages)
    if n <= 10:
        cmap, picks = colormaps["tab10"], range(n)
    elif n <= 20:
        # tab20 pairs a strong and a pale shade of each hue: strong ones first, pale ones after.
        cmap, picks = colormaps["tab20"], [*range(0, 20, 2), *range(1, 20, 2)][:n]
    else:
        cmap, picks = colormaps["hsv"], [i / n for i in range(n)]
    return {p: tuple(float(x) for x in cmap(k)) for p, k in zip(packages, picks, strict=True)}


def plot_benchmark(report: dict[str, Any], path: Path | None = None) -> Any:
    """Accuracy (%) vs mean latency (ms, log scale): colour = package, marker = backend, area = size MB."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    rows = report["rows"]
    fig = Figure(figsize=(11, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    max_size = max(r["size_mb"] for r in rows)
    scored = [r for r in rows if r["accuracy"] is not None]
    timing = [r for r in rows if r["accuracy"] is None]
    # Limits from the scored rows only: the timing-only row must not stretch the accuracy axis.
    ys = [100 * r["accuracy"] for r in scored] or [0.0, 100.0]
    pad = max(1.0, 0.15 * (max(ys) - min(ys)))
    lo, hi = min(ys) - 2 * pad, max(ys) + 2 * pad
    xs = [r["latency_mean_ms"] for r in rows]
    ax.set_ylim(lo, hi)
    # Log latency: a 60x spread (bert-base vs int8 students) leaves every small model readable.
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.6, max(xs) * 1.6)
    colors = package_colors(list(dict.fromkeys(r["package"] for r in scored)))
    # Per-point text would pile up (4 backends x N packages within a few ms): colour and marker say it all.
    for r in scored:
        c, s = colors[r["package"]], 2500 * r["size_mb"] / max_size
        marker = BACKEND_MARKERS.get(r["backend"], "o")
        ax.scatter(r["latency_mean_ms"], 100 * r["accuracy"], s=s, color=c, marker=marker, alpha=0.45, edgecolors=c)
    for r in timing:  # no accuracy: a hollow dashed marker just above the bottom edge, below every scored row
        x, y, s = r["latency_mean_ms"], lo + 0.5 * pad, 2500 * r["size_mb"] / max_size
        ax.scatter(x, y, s=s, facecolors="none", edgecolors="0.4", linestyles="--", linewidths=1.5)
        ax.annotate(
            f"{r['label']} · {r['size_mb']:.3g} MB\n(no accuracy: y position arbitrary)",
            (x, y),
            xytext=(0, 8 + math.sqrt(s / math.pi)),
            textcoords="offset points",
            ha="center",
            fontsize=8,
            color="0.3",
        )
    ax.set_xlabel("average single-query latency (ms, log scale)")
    ax.set_ylabel("test accuracy (%)")
    meta = report["metadata"]
    threads = f"{meta['threads']} thread{'s' if meta['threads'] != 1 else ''}"
    ax.set_title(f"Accuracy vs latency · {meta['cpu_model']}, {threads} · bubble area ∝ size on disk (MB)")
    handles = [Line2D([], [], marker="o", ls="", color=c, alpha=0.6, ms=9, label=p) for p, c in colors.items()]
    if timing:
        handles.append(Line2D([], [], marker="o", ls="", mfc="none", mec="0.4", ms=9, label="timing only"))
    backends = dict.fromkeys(r["backend"] for r in scored)
    handles.append(Line2D([], [], ls="", label=" "))  # spacer between the package and backend keys
    handles += [Line2D([], [], marker=BACKEND_MARKERS.get(b, "o"), ls="", color="0.4", ms=8, label=b) for b in backends]
    # One legend outside the axes: constrained layout makes room for it (a second one would be clipped).
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="package · backend")
    ax.grid(alpha=0.3, which="both")
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def write_reports(report: dict[str, Any], output_dir: Path) -> dict[str, Path]:
    """Write benchmark.json, benchmark.md and benchmark.png into `output_dir`."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: output_dir / f"benchmark.{ext}" for ext in ("json", "md", "png")}
    # Reports are shared and committed: package and data paths relative to the working folder, never absolute.
    report = without_machine_paths(report, Path.cwd())
    paths["json"].write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    paths["md"].write_text(format_markdown(report))
    plot_benchmark(report, paths["png"])
    logger.info("wrote %s", ", ".join(str(p) for p in paths.values()))
    return paths
