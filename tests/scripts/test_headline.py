"""The headline table: the book's rows and the project's, each half's ratios against its own first row."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.headline import main


def row(label: str, acc: float, size: float, p50: float) -> dict:
    package, backend = label.split("/")
    return {
        "label": label,
        "package": package,
        "backend": backend,
        "accuracy": acc,
        "in_scope_accuracy": acc + 0.01,
        "oos_recall": acc - 0.1,
        "size_mb": size,
        "latency_p50_ms": p50,
    }


def test_headline_ratios_and_missing_rows(tmp_path: Path) -> None:
    report = {
        "metadata": {"cpu_model": "cpu", "threads": 2},
        "rows": [row("big/torch", 0.95, 400.0, 40.0), row("small/onnx-int8", 0.94, 10.0, 0.5)],
    }
    bench = tmp_path / "benchmark.json"
    bench.write_text(json.dumps(report))
    out = tmp_path / "headline.md"
    assert main(["--benchmark", str(bench), "--output", str(out), "--rows", "big/torch", "small/onnx-int8"]) == 0
    lines = out.read_text().splitlines()
    book = next(x for x in lines if x.startswith("| book: distilled")).split(" | ")
    assert book[-2:] == ["6.0", "6.5 |"]  # 54 / 9 ms, 418 / 64 MB
    small = next(x for x in lines if x.startswith("| small")).split(" | ")
    assert small[2:4] == ["0.940", "0.950"]
    assert small[-2:] == ["80.0", "40.0 |"]  # 40 / 0.5 ms, 400 / 10 MB
    with pytest.raises(SystemExit, match=r"no benchmark rows \['gone/onnx'\]"):
        main(["--benchmark", str(bench), "--output", str(out), "--rows", "big/torch", "gone/onnx"])
