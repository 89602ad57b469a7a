"""End to end on loopback: the real server (`python -m app`) scraped by a real Prometheus, then the
Grafana dashboard's queries evaluated against it, each of which must return data.

Needs the `prometheus` binary (Debian package prometheus) and a model package (fixture tiny_package).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "intentserve.json"
HOST = "127.0.0.1"
RATE_WINDOW = "30s"  # stands for $__rate_interval; 30 scrapes at 1 s
SERVER_START_TIMEOUT_S = 120.0
PROMETHEUS_START_TIMEOUT_S = 60.0
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

pytestmark = pytest.mark.slow


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


def pick_backend(package: Path) -> str:
    backends = json.loads((package / "manifest.json").read_text()).get("backends", [])
    for backend in ("onnx-int8", "onnx", "torch-int8", "torch"):
        if backend in backends:
            return backend
    pytest.skip(f"package {package} lists no backend: {backends}")


class Prometheus:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def query(self, promql: str) -> dict:
        url = f"{self.base_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = http("GET", url)
        payload = json.loads(body)
        assert status == 200, f"{promql}: HTTP {status}: {payload}"
        assert payload["status"] == "success", payload
        return payload["data"]


@pytest.fixture
def prometheus_binary(find_tool) -> str:
    path = find_tool("prometheus")
    if path is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    return path


@pytest.fixture
def stack(tiny_package: Path, prometheus_binary: str, tmp_path: Path) -> Iterator[tuple[str, Prometheus]]:
    """(service URL, Prometheus) with the service up and scraped every second."""
    app_port, prom_port = free_port(), free_port()
    app_url, prom_url = f"http://{HOST}:{app_port}", f"http://{HOST}:{prom_port}"
    env = {
        **os.environ,
        "INTENT_MODEL_DIR": str(tiny_package),
        "INTENT_BACKEND": pick_backend(tiny_package),
        "INTENT_HOST": HOST,
        "INTENT_PORT": str(app_port),
        "INTENT_NUM_THREADS": "1",
        "INTENT_LOG_LEVEL": "warning",
    }
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  scrape_timeout: 1s\n"
        "  evaluation_interval: 1s\n"
        "scrape_configs:\n"
        "  - job_name: intentserve\n"
        "    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{HOST}:{app_port}']\n"
    )
    prom_argv = [
        prometheus_binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'tsdb'}",
        f"--web.listen-address={HOST}:{prom_port}",
        "--log.level=warn",
    ]
    app_log, prom_log = tmp_path / "app.log", tmp_path / "prometheus.log"
    with (
        process([sys.executable, "-m", "app"], app_log, cwd=REPO_ROOT, env=env) as app,
        process(prom_argv, prom_log, cwd=tmp_path) as prom,
    ):
        wait_for("server /readyz", lambda: http("GET", f"{app_url}/readyz", timeout=2)[0] == 200,
                 SERVER_START_TIMEOUT_S, app, app_log)  # fmt: skip
        wait_for("prometheus /-/ready", lambda: http("GET", f"{prom_url}/-/ready", timeout=2)[0] == 200,
                 PROMETHEUS_START_TIMEOUT_S, prom, prom_log)  # fmt: skip
        client = Prometheus(prom_url)

        def target_up() -> bool:
            result = client.query('up{job="intentserve"}')["result"]
            return bool(result) and result[0]["value"][1] == "1"

        wait_for("scrape target up", target_up, PROMETHEUS_START_TIMEOUT_S, prom, prom_log)
        yield app_url, client
        assert app.poll() is None, f"server died during the test\n{app_log.read_text()[-4000:]}"


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


def test_prometheus_scrapes_and_dashboard_queries_return_data(stack, dashboard_queries):
    app_url, prometheus = stack
    send_traffic(app_url)
    time.sleep(3)  # a few 1 s scrapes after the last request

    p99 = prometheus.query(
        f"histogram_quantile(0.99, sum by (le) (rate(intent_request_duration_seconds_bucket"
        f'{{endpoint="/classify"}}[{RATE_WINDOW}])))'
    )["result"]
    assert len(p99) == 1, p99
    value = float(p99[0]["value"][1])
    assert math.isfinite(value), p99
    assert 0 < value <= 2.0, p99  # within the histogram's buckets (0.5 ms .. 2 s)
    print(f"PromQL p99 of /classify: {value * 1000:.2f} ms")  # shown with -s or -rP: evidence for the docs

    classified = prometheus.query('sum(intent_requests_total{endpoint="/classify", status="200"})')["result"]
    assert float(classified[0]["value"][1]) == 50

    dashboard = json.loads(DASHBOARD.read_text())
    empty = []
    for query, promql in dashboard_queries.concrete_queries(dashboard, RATE_WINDOW):
        data = prometheus.query(promql)
        if not data["result"]:
            empty.append(f"{query.panel} [{query.ref_id}]: {promql}")
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)
