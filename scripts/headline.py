"""The headline table: the book's chapter 8 figures beside this project's, from reports/benchmark.json.

    python scripts/headline.py [--benchmark reports/benchmark.json] [--output reports/headline.md]
        [--rows mpnet-teacher/torch student-mpnet-l6/onnx-int8 clinc150-minilm/onnx-int8 student-l3/onnx-int8]

The book ("Natural Language Processing with Transformers", chapter 8) compresses a fine-tuned BERT-base on
CLINC150 into a distilled, ORT-quantized student. Ratios are each row's against its own baseline row
(the book's BERT-base, this project's benchmark reference), so the two halves compare like with like even
though their machines differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Book, chapter 8 (its final table): accuracy on CLINC150 plus test, size of the weights, mean latency.
BOOK = (
    {
        "model": "book: BERT-base (fine-tuned)",
        "backend": "PyTorch fp32",
        "accuracy": 0.867,
        "size_mb": 418.0,
        "latency_ms": 54.0,
    },
    {
        "model": "book: distilled + ORT int8",
        "backend": "ONNX Runtime int8",
        "accuracy": 0.877,
        "size_mb": 64.0,
        "latency_ms": 9.0,
    },
)
COLUMNS = ("model", "backend", "accuracy", "in-scope", "oos recall", "size MB", "latency ms", "x faster", "x smaller")


def project_rows(report: dict, wanted: list[str]) -> list[dict]:
    """The benchmark rows named `package/backend` in `wanted`, in that order, reference first."""
    by_label = {r["label"]: r for r in report["rows"]}
    missing = [w for w in wanted if w not in by_label]
    if missing:
        raise SystemExit(f"headline: no benchmark rows {missing}; the report has {sorted(by_label)}")
    return [by_label[w] for w in wanted]


def table(report: dict, wanted: list[str]) -> str:
    """Markdown: the book's two rows, then the project's, each half with ratios to its own first row."""
    rows = project_rows(report, wanted)
    ref = rows[0]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in BOOK:
        faster, smaller = BOOK[0]["latency_ms"] / r["latency_ms"], BOOK[0]["size_mb"] / r["size_mb"]
        cells = [r["model"], r["backend"], f"{r['accuracy']:.3f}", "–", "–", f"{r['size_mb']:.0f}"]
        lines.append("| " + " | ".join([*cells, f"{r['latency_ms']:.0f}", f"{faster:.1f}", f"{smaller:.1f}"]) + " |")
    for r in rows:
        faster, smaller = ref["latency_p50_ms"] / r["latency_p50_ms"], ref["size_mb"] / r["size_mb"]
        cells = [r["package"], r["backend"], f"{r['accuracy']:.3f}", f"{r['in_scope_accuracy']:.3f}"]
        cells += [f"{r['oos_recall']:.3f}", f"{r['size_mb']:.1f}", f"{r['latency_p50_ms']:.2f}"]
        lines.append("| " + " | ".join([*cells, f"{faster:.1f}", f"{smaller:.1f}"]) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Write reports/headline.md from the benchmark report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", type=Path, default=Path("reports/benchmark.json"))
    p.add_argument("--output", type=Path, default=Path("reports/headline.md"))
    p.add_argument(
        "--rows",
        nargs="+",
        default=[
            "mpnet-teacher/torch",
            "student-mpnet-l6/onnx-int8",
            "clinc150-minilm/onnx-int8",
            "student-l3/onnx-int8",
        ],
        help="benchmark rows (package/backend), the baseline first",
    )
    args = p.parse_args(argv)
    report = json.loads(args.benchmark.read_text())
    meta = report["metadata"]
    text = (
        "# Headline: the book's compression chain and this project's\n\n"
        "CLINC150 plus test split (5,500 queries). Book: its chapter 8 final table (mean latency, its machine). "
        f"This project: `python -m compression benchmark` ({meta['cpu_model']}, {meta['threads']} threads, "
        "single-query p50 latency, size of the file each backend loads, accuracy with each package's oos rule "
        "chosen on validation). Ratios are against each half's own first row; latencies compare only within a "
        "half.\n\n" + table(report, args.rows)
    )
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
