"""The benchmark: one-process rows for every package x backend, ratios to the reference, the three reports."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from app.backends.base import load_backend
from app.cpu import int8_weights_saturate
from app.package import package_size_mb, read_manifest, update_manifest
from compression.benchmark import (
    MD_COLUMNS,
    ROW_KEYS,
    TIMING_ONLY_LABEL,
    BenchmarkConfig,
    format_markdown,
    package_colors,
    plot_benchmark,
    resolve_reference,
    run_benchmark,
    summarize_ms,
    timing_only_row,
)
from compression.cli import main
from compression.data import load_clinc
from compression.evaluate import latency_queries, scores

BACKENDS = {"torch", "torch-int8", "onnx", "onnx-int8"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def tiny_bert_config(num_labels: int):
    """A BertConfig small enough to build in milliseconds, with room for the tiny package's vocab."""
    from transformers import BertConfig

    return BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=num_labels,
    )


@pytest.fixture
def package(tiny_package: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "pkg"
    shutil.copytree(tiny_package, dst)
    return dst


def test_cli_benchmark_end_to_end(package: Path, clinc_json: Path, tmp_path: Path) -> None:
    import matplotlib.image
    import torch

    # An energy rule that matters: a third of the test queries fall below its threshold (midway between two).
    test = load_clinc(str(clinc_json)).test
    logits = {name: load_backend(name, package).predict_logits(test.texts) for name in ("onnx", "torch")}
    labels = read_manifest(package).labels
    oos = labels.index("oos")

    def energy(lg: np.ndarray) -> np.ndarray:  # written out here, independently of app.decision
        return np.log(np.exp(np.delete(lg, oos, axis=1).astype(np.float64)).sum(axis=1))

    sorted_energy = np.sort(energy(logits["onnx"]))
    k = len(sorted_energy) // 3
    threshold = float(sorted_energy[k] + sorted_energy[k + 1]) / 2
    manifest = update_manifest(package, oos_score="energy", oos_threshold=threshold)
    unthresholded = scores(logits["onnx"], test.labels, manifest, -np.inf)
    assert unthresholded["accuracy"] > 0.9  # the tiny model learned the synthetic task
    assert scores(logits["onnx"], test.labels, manifest, threshold) != unthresholded

    out = tmp_path / "reports"
    threads_before = torch.get_num_threads()
    argv = ["--data", str(clinc_json), "benchmark", "--packages", str(package), "--reference", str(package)]
    argv += ["--latency-runs", "20", "--warmup-runs", "2", "--num-threads", "1", "--no-bert-base"]
    assert main([*argv, "--output-dir", str(out)]) == 0
    assert torch.get_num_threads() == threads_before  # the process-wide setting is restored

    report = json.loads((out / "benchmark.json").read_text())
    meta, rows = report["metadata"], report["rows"]
    assert meta["threads"] == 1
    assert meta["torch_num_threads"] == 1
    assert meta["latency_runs"] == 20
    assert meta["test_size"] == 60
    assert meta["data_source"] == clinc_json.name  # reports keep no machine paths
    assert meta["cpu_model"]
    assert "hostname" not in meta  # reports are committed: they name the CPU, not the machine
    assert isinstance(meta["avx512_vnni"], bool)
    assert meta["int8_weights_as_uint8"] is int8_weights_saturate()
    assert ("int8 weights computed as uint8" in (out / "benchmark.md").read_text()) == int8_weights_saturate()
    assert {"torch", "onnxruntime"} <= set(meta["versions"])
    assert len(rows) == 4
    assert {r["backend"] for r in rows} == BACKENDS
    for r in rows:
        assert list(r)[: len(ROW_KEYS)] == list(ROW_KEYS)
        assert r["package"] == "tiny-bert"
        assert not r["timing_only"]
        assert r["size_mb"] == pytest.approx(package_size_mb(package, r["backend"]))
        assert 0 < r["latency_p50_ms"] <= r["latency_p99_ms"]
        assert r["latency_std_ms"] >= 0
        assert r["latency_runs"] == 20
        assert r["oos_threshold"] == read_manifest(package).oos_threshold
        assert r["oos_score"] == "energy"

    by_backend = {r["backend"]: r for r in rows}
    ref = by_backend["torch"]
    assert ref["is_reference"]
    assert sum(r["is_reference"] for r in rows) == 1
    assert meta["reference"]["label"] == "tiny-bert/torch"
    assert ref["size_ratio_vs_ref"] == 1.0
    assert ref["speedup_vs_ref"] == 1.0
    assert ref["accuracy_delta_pts"] == 0.0
    q8 = by_backend["onnx-int8"]
    assert q8["size_ratio_vs_ref"] == pytest.approx(ref["size_mb"] / q8["size_mb"])
    assert by_backend["torch-int8"]["size_ratio_vs_ref"] == 1.0  # quantized at load: same file on disk
    assert q8["speedup_vs_ref"] == pytest.approx(ref["latency_p50_ms"] / q8["latency_p50_ms"])
    assert q8["accuracy_delta_pts"] == pytest.approx(100 * (q8["accuracy"] - ref["accuracy"]))

    # Accuracy equals the package's rule applied here by hand: arg-max, then oos where the energy is low.
    gold = np.asarray([labels.index(g) for g in test.labels])
    for name in ("onnx", "torch"):
        pred = logits[name].argmax(axis=1)
        pred[energy(logits[name]) < threshold] = oos
        in_scope = gold != oos
        expected = {
            "accuracy": (pred == gold).mean(),
            "in_scope_accuracy": (pred[in_scope] == gold[in_scope]).mean(),
            "oos_recall": (pred[~in_scope] == oos).mean(),
        }
        for key, value in expected.items():
            assert by_backend[name][key] == pytest.approx(value, abs=1e-9), (name, key)

    md = (out / "benchmark.md").read_text().splitlines()
    header = next(line for line in md if line.startswith("| package"))
    assert [c.strip() for c in header.strip("|").split("|")] == list(MD_COLUMNS)
    assert sum(line.startswith("| tiny-bert") for line in md) == 4
    assert f"tiny-bert: energy < {threshold:.3f}." in next(line for line in md if line.startswith("Oos rules"))
    assert any("threads: 1" in line and "CPU:" in line and meta["date"] in line for line in md)

    png = (out / "benchmark.png").read_bytes()
    assert png[:8] == PNG_MAGIC
    assert len(png) > 10_000
    image = matplotlib.image.imread(out / "benchmark.png")
    assert image.shape[0] > 300
    assert image.shape[1] > 300
    assert image.std() > 0.01


def test_discovery_teacher_reference_and_timing_row(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_package, artifacts / "teacher")
    update_manifest(artifacts / "teacher", name="teacher")
    shutil.copytree(tiny_package, artifacts / "students" / "small")
    (artifacts / "empty").mkdir()
    (artifacts / "broken").mkdir()
    (artifacts / "broken" / "manifest.json").write_text("{not json")
    # The bert-base-shaped row, shrunk: same code path, a config that builds in milliseconds.
    monkeypatch.setattr("compression.benchmark.measure.bert_base_config", tiny_bert_config)

    data = load_clinc(str(clinc_json))
    cfg = BenchmarkConfig(artifacts=artifacts, backends=("onnx-int8",), latency_runs=6, warmup_runs=1, num_threads=1)
    report = run_benchmark(cfg, data.test, data.source)
    rows = report["rows"]
    labels = [r["label"] for r in rows]
    # The reference torch row is always run (ratios need it in the same run), even if --backends omits it.
    assert labels == ["teacher/torch", "teacher/onnx-int8", "tiny-bert/onnx-int8", TIMING_ONLY_LABEL]
    assert rows[0]["is_reference"]
    assert rows[0]["speedup_vs_ref"] == 1.0
    assert any("broken" in s for s in report["metadata"]["skipped"])

    timing = rows[-1]
    assert timing["timing_only"]
    assert timing["package_dir"] is None
    assert all(timing[k] is None for k in ("accuracy", "in_scope_accuracy", "oos_recall", "accuracy_delta_pts"))
    assert timing["size_mb"] > 0
    assert timing["size_ratio_vs_ref"] == pytest.approx(rows[0]["size_mb"] / timing["size_mb"])
    assert timing["latency_p50_ms"] > 0
    assert timing["speedup_vs_ref"] > 0
    assert timing["num_labels"] == 6

    fig = plot_benchmark(report)
    ax = fig.axes[0]
    accuracies = [100 * r["accuracy"] for r in rows[:-1]]
    low, high = ax.get_ylim()
    assert min(accuracies) - 5 < low < min(accuracies)
    assert high >= max(accuracies)
    assert ax.get_xlim()[1] > timing["latency_mean_ms"]


def test_timing_only_row_with_tiny_config(tiny_package: Path, clinc_json: Path) -> None:
    queries = latency_queries(load_clinc(str(clinc_json)).test, n=10)
    config = tiny_bert_config(num_labels=151)
    row = timing_only_row(config, tiny_package, queries, runs=8, warmup=1, num_threads=1)
    assert row["label"] == TIMING_ONLY_LABEL
    assert "timing only" in row["label"]
    assert row["accuracy"] is None
    assert row["oos_recall"] is None
    assert row["speedup_vs_ref"] is None
    assert row["num_labels"] == 151
    assert row["latency_runs"] == 8
    assert 0 < row["latency_p50_ms"] <= row["latency_p99_ms"]
    # fp32 safetensors: 4 bytes per parameter plus a small header.
    assert row["num_parameters"] * 4 / 1e6 <= row["size_mb"] < row["num_parameters"] * 4 / 1e6 + 0.1
    # Same seed, same weights: the saved size and parameter count are reproducible.
    again = timing_only_row(config, tiny_package, queries, runs=2, warmup=0)
    assert again["size_mb"] == row["size_mb"]
    small = tiny_bert_config(num_labels=3)
    small.vocab_size = 8
    with pytest.raises(ValueError, match="tokens > config vocab"):
        timing_only_row(small, tiny_package, queries, runs=2)


def test_summarize_ms_matches_evaluate_definitions() -> None:
    stats = summarize_ms([float(x) for x in range(100, 0, -1)])  # 1..100, unsorted
    assert stats["p50"] == 51.0
    assert stats["p99"] == 100.0
    assert stats["mean"] == 50.5
    assert stats["std"] == pytest.approx(28.866, abs=1e-3)


def test_reference_resolution(tiny_package: Path, tmp_path: Path) -> None:
    teacher = read_manifest(tiny_package).model_copy(update={"name": "teacher"})
    other = read_manifest(tiny_package)
    assert resolve_reference({tmp_path / "x": other}, None) is None
    assert resolve_reference({tmp_path / "a": teacher, tmp_path / "b": other}, None) == tmp_path / "a"
    # Two "teacher"s: the folder called teacher wins; otherwise it is ambiguous.
    both = {tmp_path / "quick": teacher, tmp_path / "teacher": teacher}
    assert resolve_reference(both, None) == tmp_path / "teacher"
    with pytest.raises(ValueError, match="--reference"):
        resolve_reference({tmp_path / "a": teacher, tmp_path / "b": teacher}, None)
    assert resolve_reference(both, tmp_path / "b") == (tmp_path / "b").resolve()
    # The BERT-base-class teacher is the reference when present; the MiniLM teacher stays a row.
    mpnet = read_manifest(tiny_package).model_copy(update={"name": "mpnet-teacher"})
    assert resolve_reference({tmp_path / "t": teacher, tmp_path / "m": mpnet, tmp_path / "x": other}, None) == (
        tmp_path / "m"
    )


def test_a_bert_base_sized_reference_needs_no_timing_only_row(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(tiny_package, artifacts / "mpnet-teacher")
    update_manifest(artifacts / "mpnet-teacher", name="mpnet-teacher")
    monkeypatch.setattr("compression.benchmark.measure.bert_base_config", tiny_bert_config)
    data = load_clinc(str(clinc_json))
    cfg = BenchmarkConfig(artifacts=artifacts, backends=("onnx-int8",), latency_runs=4, warmup_runs=1, num_threads=1)
    report = run_benchmark(cfg, data.test, data.source)
    assert report["rows"][-1]["label"] == TIMING_ONLY_LABEL  # a small reference: the random stand-in is timed
    assert "random weights" in format_markdown(report)
    monkeypatch.setattr("compression.benchmark.measure.BERT_BASE_MB", 0.01)  # the reference is now "BERT-base-sized"
    report = run_benchmark(cfg, data.test, data.source)
    rows = report["rows"]
    assert [r["label"] for r in rows] == ["mpnet-teacher/torch", "mpnet-teacher/onnx-int8"]
    assert rows[0]["is_reference"]
    assert "random weights" not in format_markdown(report)  # no note about a row that is not there


@pytest.mark.parametrize("n", [3, 12, 20, 25])
def test_package_colors_are_distinct_beyond_ten_packages(n: int) -> None:
    # The session-7 benchmark had 12 packages; colours cycling every 10 gave two pairs the same colour.
    names = [f"pkg{i}" for i in range(n)]
    colors = package_colors(names)
    assert list(colors) == names
    assert len(set(colors.values())) == n


def test_evaluate_and_benchmark_timers_make_the_same_calls_and_time_the_backend(tiny_package: Path) -> None:
    from app.backends.base import load_backend
    from compression.benchmark import time_interleaved
    from compression.evaluate import latency_ms

    queries = ["what is my balance", "set a timer for ten minutes", "play some jazz"]
    slow, quick = load_backend("fake", tiny_package), load_backend("fake", tiny_package)
    slow.delay = 0.02  # 20 ms per call: well above the fake's own microseconds, even on a loaded machine
    slow.calls.clear()
    single = latency_ms(slow, queries, runs=5, warmup=2)
    assert slow.calls == [1] * (2 + 5)  # warm-up, then the timed single-query calls
    assert 20.0 <= single["p50"] <= single["p99"]
    slow.calls.clear()
    quick.calls.clear()
    lat_slow, lat_quick = time_interleaved([slow, quick], queries, runs=6, warmup=1, rounds=3, block_warmup=1)
    for backend in (slow, quick):
        assert backend.calls == [1] * (1 + 3 * 1 + 6)  # warm-up, one block warm-up per round, the timed calls
    assert lat_slow["p50"] >= 20.0 > lat_quick["p99"]
