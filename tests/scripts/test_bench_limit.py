"""scripts/bench_limit.py: the limit L, E, the profile folding, and the model-alone runs on a real backend."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest

from scripts.bench_limit import fold, limit, profile_table, run_model_alone, summarize, write_reports

RAW = "\n".join(
    [
        'process 1:"python -m app";thread (1): MainThread;main (app/__main__.py:65);serve (app/server.py:74) 6',
        'process 1:"python -m app";thread (1): MainThread;main (app/__main__.py:65);decide (app/service.py:9) 3',
        'process 1:"python -m app";thread (2): inference;run (x/site-packages/onnxruntime/session.py:200) 10',
        'process 1:"python -m app";thread (1): MainThread;f (a.py:1);g (a.py:2);f (a.py:3) 1',
        "garbage line",
    ]
)


def test_limit_is_the_rate_of_an_empty_request_and_a_model_call_back_to_back() -> None:
    assert limit(1000.0, 1000.0) == pytest.approx(500.0)
    assert limit(8800.0, 2400.0) == pytest.approx(1 / (1 / 8800 + 1 / 2400))
    assert math.isnan(limit(0.0, 1000.0))


def test_fold_counts_own_and_inclusive_samples_per_function() -> None:
    own, inclusive, total = fold(RAW)
    assert total == 20
    assert own["run (onnxruntime/session.py)"] == 10  # site-packages prefix dropped, line numbers merged
    assert own["serve (app/server.py)"] == 6
    assert inclusive["main (app/__main__.py)"] == 9
    assert inclusive["f (a.py)"] == 1  # a recursive function counts once per sample
    assert not any(name.startswith(("process", "thread")) for name in inclusive)
    table = profile_table(RAW, top=2)
    assert table.splitlines()[0].startswith("20 samples")
    assert " 50.0%  run (onnxruntime/session.py)" in table


def test_summarize_takes_medians_over_rounds_and_states_e() -> None:
    def run(rps: float, p99: float = 9.0) -> dict:
        return {"rps": rps, "p50_ms": 2.0, "p99_ms": p99, "mean_ms": 3.0, "errors": 0}

    runs = {"noop": [run(4000), run(5000), run(6000)], "service": [run(700), run(900), run(800)], "peer": [run(80)] * 3}
    model = [{"qps": 1000.0, "p50_ms": 0.9}, {"qps": 1000.0, "p50_ms": 1.1}, {"qps": 2000.0, "p50_ms": 1.0}]
    row = summarize(1, 32, runs, model)
    assert row["noop_rps"] == 5000
    assert row["model_qps"] == 1000
    assert row["limit_rps"] == pytest.approx(1 / (1 / 5000 + 1 / 1000))
    assert row["efficiency"] == pytest.approx(800 / row["limit_rps"])
    assert row["p99_over_mean"] == pytest.approx(3.0)
    assert row["floor_p50_ms"] == pytest.approx(3.0)
    assert math.isnan(row["paced_floor_p50_ms"])  # measured at c=1 only
    assert row["vs_peer"] == pytest.approx(10.0)
    runs["paced_model"] = [{"p50_ms": 1.5}, {"p50_ms": 1.3}, {"p50_ms": 1.4}]
    assert summarize(1, 1, runs, model)["paced_floor_p50_ms"] == pytest.approx(2.0 + 1.4)


def test_reports_are_strict_json_with_unmeasured_figures_as_null(tmp_path: Path) -> None:
    def run(rps: float) -> dict:
        return {"rps": rps, "p50_ms": 2.0, "p99_ms": 9.0, "mean_ms": 3.0, "errors": 0}

    model = [{"qps": 1000.0, "p50_ms": 1.0}]
    c1 = {"noop": [run(5000)], "service": [run(400)], "paced_model": [{"p50_ms": 1.4}]}
    c32 = {"noop": [run(5000)], "service": [run(800)]}  # no paced run beyond c=1
    rows = [summarize(1, 1, c1, model), summarize(1, 32, c32, model)]
    meta = {k: "x" for k in ("date", "commit", "cpu", "cpu_count", "package", "backend", "num_threads")}
    write_reports(tmp_path, {**meta, "duration_s": 1, "rounds": 1}, rows, "")

    def no_constants(name: str) -> None:
        raise AssertionError(f"{name} in the JSON report")

    report = json.loads((tmp_path / "bench_limit.json").read_text(), parse_constant=no_constants)
    got = report["results"]
    assert got[0]["paced_floor_p50_ms"] == pytest.approx(2.0 + 1.4)
    assert got[1]["paced_floor_p50_ms"] is None
    assert got[1]["efficiency"] == pytest.approx(800 / limit(5000, 1000))
    assert "| 32 |" in (tmp_path / "bench_limit.md").read_text()


def test_model_alone_runs_the_packages_backend_in_parallel_processes(fake_package: Path, tmp_path: Path) -> None:
    bodies = tmp_path / "bodies.jsonl"
    bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in ["transfer money", "weather", "hello there"]))
    args = SimpleNamespace(package=fake_package, backend="fake", num_threads=1, duration=1)
    result = run_model_alone(args, 2, bodies)
    assert result["qps"] > 100  # two processes, each a closed loop for 1 s over a weight-free backend
    assert 0 < result["p50_ms"] < 50
    # Paced: 20 ms idle before each call, not counted in its latency.
    paced = run_model_alone(args, 1, bodies, gap_s=0.02)
    assert 10 < paced["qps"] < 50
    assert paced["p50_ms"] < 10
    with pytest.raises(RuntimeError, match="before it was ready"):
        run_model_alone(SimpleNamespace(**{**vars(args), "backend": "no-such-backend"}), 1, bodies)
