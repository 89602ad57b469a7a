"""INTENT_WORKERS > 1: pre-forked processes on one port, metrics summed over them, one SIGTERM drains all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from tests.app.test_shutdown import free_port, metric, server_env, wait_ready
from tests.app.test_startup import damage_label_count

ROOT = Path(__file__).resolve().parents[2]


def start(package: Path, port: int, log: Path, metrics_dir: Path, **env: str) -> subprocess.Popen:
    """`python -m app` exactly as deployed, with the real onnx backend."""
    settings = {"INTENT_BACKEND": "onnx", "INTENT_WORKERS": "2", "INTENT_WARMUP_RUNS": "1", **env}
    environ = server_env(package, port, PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), **settings)
    with log.open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=environ, stdout=fh, stderr=subprocess.STDOUT
        )


def test_threads_are_split_between_workers() -> None:
    cores = os.cpu_count() or 1
    assert Settings(workers=1).threads_per_worker == cores
    assert Settings(workers=cores * 2).threads_per_worker == 1
    assert Settings(workers=2, num_threads=3).threads_per_worker == 3


def test_two_workers_share_the_port_sum_their_metrics_and_drain_on_sigterm(tiny_package: Path, tmp_path: Path) -> None:
    port, log, metrics_dir = free_port(), tmp_path / "server.log", tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"stale")  # a previous run's file must not be summed in
    proc = start(tiny_package, port, log, metrics_dir, INTENT_API_KEY="k")
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": "Bearer k"}
    try:
        wait_ready(proc, url, log)
        n = 60
        answers = []
        for _ in range(n):  # a new connection per request: the kernel hands them to both workers
            with httpx.Client(base_url=url, headers=auth, timeout=10) as client:
                r = client.post("/classify", json={"text": "what is the weather"})
                assert r.status_code == 200, r.text
                answers.append(r.json()["intent"])
        assert set(answers) == {answers[0]}  # both workers load the same model
        # Each worker wrote its own counter file; /metrics from either one sums both.
        writers = {p.name.split("_")[-1] for p in metrics_dir.glob("counter_*.db")}
        assert len(writers) == 2, writers
        for _ in range(4):
            text = httpx.get(f"{url}/metrics", timeout=10).text
            assert metric(text, "intent_requests_total", endpoint="/classify", status="200") == n
        assert metric(text, "intent_model_info", model="tiny-bert", backend="onnx", precision="fp32") == 1
        reload = httpx.post(f"{url}/admin/reload", headers=auth, timeout=10)
        assert reload.status_code == 409  # a reload would swap the model in one worker only
        assert reload.json()["error"]["code"] == "reload_unavailable"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
    assert log.read_text().count("SIGTERM: draining") == 2  # the parent forwarded the stop to both workers


def copy_package(src: Path, dest: Path) -> Path:
    dest.mkdir()
    for f in src.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_a_bad_package_is_refused_before_forking(tiny_package: Path, tmp_path: Path) -> None:
    package = copy_package(tiny_package, tmp_path / "pkg")
    proc = start(package, free_port(), tmp_path / "log", tmp_path, INTENT_BACKEND="nope")
    assert proc.wait(timeout=30) == 2
    assert "unknown backend 'nope'" in (tmp_path / "log").read_text()
    (package / "model.onnx").write_bytes(b"not onnx")
    proc = start(package, free_port(), tmp_path / "log", tmp_path)
    assert proc.wait(timeout=30) == 2
    log = (tmp_path / "log").read_text()
    assert "sha256" in log
    assert "worker 0" not in log  # the parent's check caught it: no worker was started


def test_a_worker_that_cannot_load_stops_the_service(tiny_package: Path, tmp_path: Path) -> None:
    # Files and hashes are fine (the parent's check passes), but the model's logits do not match the labels:
    # only loading the model finds that, in the workers.
    package = copy_package(tiny_package, tmp_path / "pkg")
    damage_label_count(package)
    proc = start(package, free_port(), tmp_path / "log", tmp_path)
    assert proc.wait(timeout=60) == 2
    log = (tmp_path / "log").read_text()
    assert "model outputs 6 logits but the manifest lists 7 labels" in log
    assert "worker 0" in log or "worker 1" in log


@pytest.mark.parametrize("workers", ["0", "65"])
def test_worker_count_is_validated(workers: str, tiny_package: Path, tmp_path: Path) -> None:
    proc = start(tiny_package, free_port(), tmp_path / "log", tmp_path, INTENT_WORKERS=workers)
    assert proc.wait(timeout=30) == 2
    assert "INTENT_WORKERS" in (tmp_path / "log").read_text()
