"""What a benchmark run measures: its settings, the row layout and which package is the reference."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from app.package import MANIFEST, Manifest

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
