"""Accuracy vs sparsity for magnitude and movement pruning, from scripts/remote/train.py's summary.

    python scripts/plot_pruning.py runs/fetched/pruned-summary.json [--out reports]

Plots in-scope accuracy on the test split (torch fp32, as scored on the GPU machine) and on the
validation split. Only in-scope accuracy is plotted: in that run, embedding rows of tokens that occur
only in oos queries were zero (docs/experiments.md, "The v0 packages"), which changes oos scores but not in-scope ones
(every in-scope test and validation token had its pretrained row). Writes pruning.{png,json}.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt


def curves(summary: dict) -> dict[str, list[tuple[float, float, float]]]:
    """method -> [(sparsity %, test in-scope acc, validation in-scope acc)], the student at 0%."""
    out: dict[str, list[tuple[float, float, float]]] = {"magnitude": [], "movement": []}
    for name, result in summary["prune"].items():
        match = re.fullmatch(r"pruned-(magnitude|movement)-(\d+)", name)
        if match:
            out[match[1]].append(
                (
                    float(match[2]),
                    result["test"]["in_scope_accuracy"],
                    result["validation"]["in_scope_accuracy"],
                )
            )
    student = summary.get("student", {}).get("student")
    for points in out.values():
        if student:
            points.append((0.0, student["test"]["in_scope_accuracy"], student["validation"]["in_scope_accuracy"]))
        points.sort()
    return out


def main() -> None:
    """Write the plot and the points."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("summaries", type=Path, nargs="+", help="summary JSON(s); later ones add keys")
    p.add_argument("--out", type=Path, default=Path("reports"))
    args = p.parse_args()
    summary: dict = {}
    for path in args.summaries:
        summary.update(json.loads(path.read_text()))
    data = curves(summary)
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, marker, color in (("magnitude", "o", "tab:blue"), ("movement", "s", "tab:orange")):
        xs = [x for x, _, _ in data[method]]
        ax.plot(xs, [t * 100 for _, t, _ in data[method]], marker=marker, color=color, label=f"{method} (test)")
        val = [v * 100 for _, _, v in data[method]]
        ax.plot(xs, val, marker=marker, color=color, linestyle=":", alpha=0.6, label=f"{method} (validation)")
    ax.set_xlabel("sparsity of encoder Linear weights (%)")
    ax.set_ylabel("in-scope accuracy (%)")
    ax.set_title("Unstructured pruning of the 3-layer student (with KD)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "pruning.png", dpi=120)
    (args.out / "pruning.json").write_text(json.dumps(data, indent=1))
    for method, points in data.items():
        for x, t, v in points:
            print(f"{method:9s} {x:4.0f}%  test in-scope {t:.4f}  validation in-scope {v:.4f}")


if __name__ == "__main__":
    main()
