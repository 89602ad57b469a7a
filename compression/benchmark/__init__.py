"""PerformanceBenchmark done right: every package x backend in one process, one thread setting, one report.

For each row: accuracy / in-scope accuracy / oos recall on the test split with the package's calibrated
threshold, size on disk of the weights file the backend loads, single-query latency (tokenize + infer +
softmax) measured round-robin across all rows, and ratios to the reference row (the teacher's torch fp32).
A timing-only BERT-base-shaped row (random weights) gives a familiar yardstick. Timings are only comparable
within one run: same process, same machine, same background load.

`config` holds the settings and the row layout, `rows` measures one row, `measure` runs them all, `report`
writes the JSON, Markdown and plot.
"""

from compression.benchmark.config import (
    BERT_BASE_MB,
    LATENCY_KEYS,
    RATIO_KEYS,
    REFERENCE_BACKEND,
    REFERENCE_NAMES,
    ROW_KEYS,
    SCORE_KEYS,
    SPARSITY_KEYS,
    TIMING_ONLY_LABEL,
    BenchmarkConfig,
    effective_threads,
    find_packages,
    resolve_reference,
)
from compression.benchmark.measure import machine_info, measure_rows, run_benchmark
from compression.benchmark.report import (
    BACKEND_MARKERS,
    MD_COLUMNS,
    format_markdown,
    package_colors,
    plot_benchmark,
    write_reports,
)
from compression.benchmark.rows import (
    add_ratios,
    bert_base_config,
    package_row,
    safetensors_size_mb,
    time_interleaved,
    timing_only_row,
)
from compression.evaluate import summarize_ms

__all__ = [
    "BACKEND_MARKERS",
    "BERT_BASE_MB",
    "LATENCY_KEYS",
    "MD_COLUMNS",
    "RATIO_KEYS",
    "REFERENCE_BACKEND",
    "REFERENCE_NAMES",
    "ROW_KEYS",
    "SCORE_KEYS",
    "SPARSITY_KEYS",
    "TIMING_ONLY_LABEL",
    "BenchmarkConfig",
    "add_ratios",
    "bert_base_config",
    "effective_threads",
    "find_packages",
    "format_markdown",
    "machine_info",
    "measure_rows",
    "package_colors",
    "package_row",
    "plot_benchmark",
    "resolve_reference",
    "run_benchmark",
    "safetensors_size_mb",
    "summarize_ms",
    "time_interleaved",
    "timing_only_row",
    "write_reports",
]
