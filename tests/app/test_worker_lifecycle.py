"""INTENT_WORKERS > 1 supervision: workers die with the parent, a dead worker is replaced, repeated crashes stop it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from tests.app.test_shutdown import free_port, server_env, wait_ready

ROOT = Path(__file__).resolve().parents[2]


def start(package: Path, port: int, tmp_path: Path, **env: str) -> subprocess.Popen:
    """`python -m app` with 2 workers; TMPDIR in tmp_path, so the metrics folder it creates is found there."""
    settings = {"INTENT_BACKEND": "onnx", "INTENT_WORKERS": "2", "INTENT_WARMUP_RUNS": "0", **env}
    environ = server_env(package, port, TMPDIR=str(tmp_path), **settings)
    with (tmp_path / "server.log").open("w") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "app"], cwd=ROOT, env=environ, stdout=fh, stderr=subprocess.STDOUT
        )


def until(condition: Callable[[], bool], what: str, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{log.read_text()}"
        time.sleep(0.1)


def worker_pids(log: Path) -> dict[int, int]:
    """Worker index -> pid of its latest process, from the log."""
    return {int(i): int(p) for i, p in re.findall(r"worker (\d+) \(pid (\d+)\): ", log.read_text())}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_killing_the_parent_stops_the_workers_frees_the_port_and_the_metrics_folder(
    tiny_package: Path, tmp_path: Path
) -> None:
    port, log = free_port(), tmp_path / "server.log"
    stale = tmp_path / "intentserve-metrics-999999999-x"  # a folder left by a parent that was killed earlier
    stale.mkdir()
    proc = start(tiny_package, port, tmp_path)
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log, timeout=180)
        until(lambda: len(worker_pids(log)) == 2, "both workers up", log)
        pids = list(worker_pids(log).values())
        folders = list(tmp_path.glob("intentserve-metrics-*"))
        assert [f.name.split("-")[2] for f in folders] == [str(proc.pid)]  # the stale one was removed
        proc.kill()  # SIGKILL: the parent can clean nothing up itself
        proc.wait()
        until(lambda: not any(alive(p) for p in pids), "workers outlived their parent", log)
        until(lambda: port_free(port), "the port is still held", log)
        until(lambda: not list(tmp_path.glob("intentserve-metrics-*")), "metrics folder left behind", log)
    finally:
        stop(proc)
        for pid in worker_pids(log).values():
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    restarted = start(tiny_package, port, tmp_path)  # a restart on the same port works at once
    try:
        wait_ready(restarted, f"http://127.0.0.1:{port}", log, timeout=180)
    finally:
        restarted.send_signal(signal.SIGTERM)
        assert restarted.wait(timeout=30) == 0


@pytest.mark.slow
def test_a_dead_worker_is_replaced_and_repeated_crashes_stop_the_service(tiny_package: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = start(tiny_package, port, tmp_path, INTENT_WORKER_RESTARTS="2")
    try:
        wait_ready(proc, url, log, timeout=180)  # generous: a loaded CI machine
        until(lambda: len(worker_pids(log)) == 2, "both workers up", log)
        first = worker_pids(log)
        os.kill(first[0], signal.SIGKILL)
        until(lambda: worker_pids(log)[0] != first[0], "worker 0 was not replaced", log)
        for _ in range(10):  # served throughout, by the survivor and then the replacement too
            assert httpx.post(f"{url}/classify", json={"text": "weather"}, timeout=10).status_code == 200
        assert "replacing it in 0.5 s" in log.read_text()
        # Two more crashes within the minute: past INTENT_WORKER_RESTARTS=2, the parent gives up.
        second = worker_pids(log)
        os.kill(second[0], signal.SIGKILL)
        until(lambda: "replacing it in 1.0 s" in log.read_text(), "second crash not seen", log)
        os.kill(second[1], signal.SIGKILL)
        code = proc.wait(timeout=30)
    finally:
        stop(proc)
    output = log.read_text()
    assert code == 1, output
    assert "3 worker exits within 60 s (INTENT_WORKER_RESTARTS=2): giving up" in output
    assert not list(tmp_path.glob("intentserve-metrics-*"))
    until(lambda: port_free(port), "the port is still held", log)


@pytest.mark.slow
def test_a_stop_while_the_workers_still_load_is_a_clean_exit(tiny_package: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    # Thousands of warm-up runs keep both workers loading (before uvicorn installs its handlers) for seconds.
    proc = start(tiny_package, port, tmp_path, INTENT_WARMUP_RUNS="20000")
    try:
        until(lambda: "serving with 2 workers" in log.read_text(), "the parent forked its workers", log)
        time.sleep(0.5)
        assert not worker_pids(log), log.read_text()  # neither worker got as far as serving
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not list(tmp_path.glob("intentserve-metrics-*"))
