"""The benchmark's reports: benchmark.json, a Markdown table and an accuracy-vs-latency plot."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from app.package import without_machine_paths

logger = logging.getLogger(__name__)

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
        f"CPU: {meta['cpu_model']} (avx512_vnni: {'yes' if meta['avx512_vnni'] else 'no'}"
        f"{'; int8 weights computed as uint8, exact and slower' if meta.get('int8_weights_as_uint8') else ''}) · "
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
    size_note = (
        "Size = the weights file the backend loads (torch-int8 quantizes at load time, so its file is the fp32 "
        "safetensors). Accuracy uses each package's calibrated oos rule (score and threshold)."
    )
    if any(r.get("timing_only") for r in report["rows"]):
        size_note += " The bert-base-shaped row has random weights: its size is its fp32 safetensors file and it has no accuracy."
    lines += [
        "",
        size_note,
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
