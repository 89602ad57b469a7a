"""Smoke test of loadtests/locustfile.py: a few Locust users for ~3 s against the real service.

The service runs as a subprocess with the dependency-free `fake` backend (keyword scores over the
label names), so answers are predictable: queries made of a label's words must come back as that
label, and queries without any label word as `oos`. This checks the request mix, the response
checks (no failures), the CSV report and the accuracy bookkeeping end to end, in a few seconds.
"""

from __future__ import annotations

import contextlib
import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "loadtests" / "locustfile.py"
OOS_TEXTS = ["zebra quartz", "sing me a lullaby", "who won the cup final", "zzz qqq", "paint it green"]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("locust") is None, reason="locust is not installed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_data(path: Path, labels: list[str]) -> dict[str, int]:
    """A CLINC150-layout file whose texts are made of label words (unambiguous labels only)."""
    words = {label: set(label.lower().split("_")) for label in labels if label != "oos"}
    unambiguous = [a for a, wa in words.items() if not any(b != a and wa <= wb for b, wb in words.items())]
    assert unambiguous, f"no usable labels in {labels}"
    all_words = set().union(*words.values())
    assert not any(set(t.split()) & all_words for t in OOS_TEXTS)
    test = [
        [f"{prefix} {' '.join(label.split('_'))} {suffix}", label]
        for label in unambiguous
        for prefix, suffix in (("please", "now"), ("can you do", "for me"), ("my", "today"))
    ]
    oos = [[t, "oos"] for t in OOS_TEXTS]
    data = {"train": test, "val": test, "test": test, "oos_train": oos, "oos_val": oos, "oos_test": oos}
    path.write_text(json.dumps(data), encoding="utf-8")
    return {"in_scope": len(test), "oos": len(oos)}


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"server did not become ready (exit code {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


@contextlib.contextmanager
def _server(argv: list[str], env: dict[str, str], ready_url: str, log: Path) -> Iterator[None]:
    """Run a server subprocess in its own process group; always stop the whole group."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("INTENT_")}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            argv, cwd=REPO, env={**base, **env}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        _wait_ready(proc, ready_url, log)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def _locust(url: str, tmp_path: Path, data: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict[str, dict]]:
    """Locust headless for ~3 s with 4 users; returns the process and the rows of its final stats CSV."""
    cmd = [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--host", url,
        "-u", "4", "-r", "4", "-t", "3s", "--stop-timeout", "1", "--only-summary",
        "--csv", str(tmp_path / "smoke"), "--data", str(data), "--think-time", "0.02,0.1", *extra,
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=90)
    stats = (tmp_path / "smoke_stats.csv").read_text(encoding="utf-8").splitlines()
    return proc, {row["Name"]: row for row in csv.DictReader(stats)}


def test_locust_smoke(tiny_package: Path, tmp_path: Path) -> None:
    labels = json.loads((tiny_package / "manifest.json").read_text())["labels"]
    data = tmp_path / "data.json"
    _write_data(data, labels)
    accuracy_out = tmp_path / "accuracy.json"
    port = _free_port()
    env = {
        "INTENT_MODEL_DIR": str(tiny_package),
        "INTENT_BACKEND": "fake",
        "INTENT_HOST": "127.0.0.1",
        "INTENT_PORT": str(port),
        # fake backend: a matched label scores ~0.99, a text without label words 1/len(labels)
        "INTENT_OOS_THRESHOLD": "0.5",
        "INTENT_LOG_LEVEL": "warning",
    }
    url = f"http://127.0.0.1:{port}"
    with _server([sys.executable, "-m", "app"], env, f"{url}/readyz", tmp_path / "server.log"):
        proc, rows = _locust(
            url, tmp_path, data, "--oos-weight", "0.3", "--batch-share", "0.2", "--batch-size", "4",
            "--accuracy-out", str(accuracy_out), "--min-accuracy", "0.99",
        )  # fmt: skip
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 0, output

    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0, output
    assert int(total["Failure Count"]) == 0, output
    for name in ("/classify [in-scope]", "/classify [oos]", "/classify/batch"):
        assert name in rows, f"no {name} requests\n{output}"
        assert int(rows[name]["Request Count"]) > 0, f"no {name} requests\n{output}"
    assert (tmp_path / "smoke_failures.csv").read_text().strip().count("\n") == 0  # header only

    acc = json.loads(accuracy_out.read_text())
    singles = int(rows["/classify [in-scope]"]["Request Count"]) + int(rows["/classify [oos]"]["Request Count"])
    assert acc["samples"] == singles
    assert acc["in_scope_samples"] > 0
    assert acc["oos_samples"] > 0
    assert acc["accuracy"] == 1.0, acc  # the fake backend answers keyword queries exactly
    assert acc["passed"] is True
    assert "ACCURACY under load: 100.00%" in proc.stdout


def test_locust_marks_contract_violations_as_failures(tmp_path: Path) -> None:
    """Against the noop server (answers lack most API keys) every request must count as failed."""
    data = tmp_path / "data.json"
    _write_data(data, ["balance", "transfer", "oos"])
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [sys.executable, str(REPO / "scripts" / "naive_server.py"), "--noop", "--port", str(port)]
    with _server(argv, {}, f"{url}/healthz", tmp_path / "server.log"):
        proc, rows = _locust(url, tmp_path, data, "--batch-share", "0", "--accuracy-out", str(tmp_path / "acc.json"))
    output = proc.stdout[-4000:] + proc.stderr[-4000:]
    assert proc.returncode == 1, output  # Locust exits 1 when any request failed
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0, output
    assert total["Failure Count"] == total["Request Count"], output
    assert "missing keys" in (tmp_path / "smoke_failures.csv").read_text()
    assert json.loads((tmp_path / "acc.json").read_text())["samples"] == 0  # failed answers are not scored
