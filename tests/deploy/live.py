"""Helpers for the end-to-end deployment tests: processes on loopback, HTTP calls, a Prometheus client."""

from __future__ import annotations

import json
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

HOST = "127.0.0.1"
TEXTS = [
    "transfer $100 from checking to savings",
    "what is the weather like tomorrow",
    "set an alarm for 7 am",
    "how do i say thank you in french",
    "tell me a joke",
    "what's my credit card balance",
    "book a table for two tonight",
    "who painted the mona lisa",
    "play some jazz music",
    "is my flight delayed",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http(method: str, url: str, body: object | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """(status, body) of one request; 4xx/5xx are returned, not raised."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_for(what: str, check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen, log: Path) -> None:
    """Poll `check` until true; fail early if `proc` died, and fail with its log on timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{what}: process exited with {proc.returncode}\n{log.read_text()[-4000:]}")
        try:
            if check():
                return
        except (OSError, ValueError):  # connection refused / reset / not JSON yet
            pass
        time.sleep(0.25)
    pytest.fail(f"{what}: not ready after {timeout_s:.0f}s\n{log.read_text()[-4000:]}")


@contextmanager
def process(argv: list[str], log: Path, **kwargs) -> Iterator[subprocess.Popen]:
    """Start a process with output to `log`; always terminate it (then kill) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def api(self, path: str, **params: str) -> Any:
        """The `data` of a successful GET /api/v1/<path>."""
        url = f"{self.base_url}/api/v1/{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
        status, body = http("GET", url)
        payload = json.loads(body)
        assert status == 200, f"{path} {params}: HTTP {status}: {payload}"
        assert payload["status"] == "success", payload
        return payload["data"]

    def query(self, promql: str) -> dict:
        return self.api("query", query=promql)


def send_traffic(app_url: str) -> None:
    """~50 classify calls over a few scrapes, plus batch calls and a few errors (4xx)."""
    for i in range(50):
        status, body = http("POST", f"{app_url}/classify", {"text": TEXTS[i % len(TEXTS)]})
        assert status == 200, body
        if i % 10 == 9:
            time.sleep(0.5)
    for _ in range(3):
        status, body = http("POST", f"{app_url}/classify/batch", {"texts": TEXTS[:4]})
        assert status == 200, body
    assert http("POST", f"{app_url}/classify", {"text": "   "})[0] == 422
    assert http("POST", f"{app_url}/classify", {"txt": "wrong field"})[0] == 422
    assert http("GET", f"{app_url}/no-such-path")[0] == 404


def empty_dashboard_queries(
    prometheus: Prometheus, dashboard_queries: Any, dashboard: Path, rate_window: str
) -> list[str]:
    """The Grafana dashboard's queries (made concrete) that return no data from this Prometheus."""
    empty = []
    for query, promql in dashboard_queries.concrete_queries(json.loads(dashboard.read_text()), rate_window):
        if not prometheus.query(promql)["result"]:
            empty.append(f"{query.panel} [{query.ref_id}]: {promql}")
    return empty
