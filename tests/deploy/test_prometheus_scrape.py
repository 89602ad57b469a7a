"""End to end on loopback: the real server (`python -m app`) scraped by a real Prometheus, then the
Grafana dashboard's queries evaluated against it, each of which must return data, and the project's
alert rules evaluated on the real series.

Needs the `prometheus` binary (Debian package prometheus) and a model package (fixture tiny_package).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.deploy.live import (
    HOST,
    Prometheus,
    empty_dashboard_queries,
    free_port,
    http,
    process,
    send_traffic,
    wait_for,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "intentserve.json"
ALERTS = REPO_ROOT / "deploy" / "prometheus" / "alerts.yml"
RATE_WINDOW = "30s"  # stands for $__rate_interval; 30 scrapes at 1 s
SERVER_START_TIMEOUT_S = 120.0
PROMETHEUS_START_TIMEOUT_S = 60.0

pytestmark = pytest.mark.slow


def pick_backend(package: Path) -> str:
    backends = json.loads((package / "manifest.json").read_text()).get("backends", [])
    for backend in ("onnx-int8", "onnx", "torch-int8", "torch"):
        if backend in backends:
            return backend
    pytest.skip(f"package {package} lists no backend: {backends}")


@pytest.fixture
def prometheus_binary(find_tool) -> str:
    path = find_tool("prometheus")
    if path is None:
        pytest.skip("prometheus not installed (Debian package prometheus)")
    return path


@dataclass
class Stack:
    """The live service, the Prometheus scraping it, and the scrape target (instance) of each."""

    app_url: str
    prometheus: Prometheus
    live: str
    dead: str  # a second target of the same job where nothing listens


@pytest.fixture
def stack(tiny_package: Path, prometheus_binary: str, tmp_path: Path) -> Iterator[Stack]:
    """The service up and scraped every second, with the project's alert rules evaluated every second."""
    app_port, prom_port, dead_port = free_port(), free_port(), free_port()
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
        f"rule_files: ['{ALERTS}']\n"
        "scrape_configs:\n"
        "  - job_name: intentserve\n"
        "    metrics_path: /metrics\n"
        f"    static_configs:\n      - targets: ['{HOST}:{app_port}', '{HOST}:{dead_port}']\n"
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
            result = client.query(f'up{{job="intentserve", instance="{HOST}:{app_port}"}}')["result"]
            return bool(result) and result[0]["value"][1] == "1"

        wait_for("scrape target up", target_up, PROMETHEUS_START_TIMEOUT_S, prom, prom_log)
        yield Stack(app_url, client, f"{HOST}:{app_port}", f"{HOST}:{dead_port}")
        assert app.poll() is None, f"server died during the test\n{app_log.read_text()[-4000:]}"


def test_prometheus_scrapes_and_dashboard_queries_return_data(stack, dashboard_queries):
    app_url, prometheus = stack.app_url, stack.prometheus
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

    empty = empty_dashboard_queries(prometheus, dashboard_queries, DASHBOARD, RATE_WINDOW)
    assert not empty, "dashboard queries with no data:\n" + "\n".join(empty)


def test_alert_rules_evaluate_on_the_real_series(stack):
    send_traffic(stack.app_url)
    rules = yaml.safe_load(ALERTS.read_text())
    expected = {rule.get("alert") or rule["record"] for group in rules["groups"] for rule in group["rules"]}

    def evaluated() -> list[dict]:
        loaded = [r for g in stack.prometheus.api("rules")["groups"] for r in g["rules"]]
        return loaded if all(r.get("lastEvaluation", "").startswith("20") for r in loaded) else []

    deadline = time.monotonic() + 30
    while not (loaded := evaluated()) and time.monotonic() < deadline:
        time.sleep(0.5)
    time.sleep(3)  # a few evaluations after the traffic
    loaded = evaluated()
    assert {r["name"] for r in loaded} == expected
    failing = [f"{r['name']}: {r.get('lastError')}" for r in loaded if r["health"] != "ok"]
    assert not failing, failing

    share = stack.prometheus.query(f'instance:intent_oos_share:ratio_rate30m{{instance="{stack.live}"}}')["result"]
    assert len(share) == 1, share  # the recording rule has data
    assert 0.0 <= float(share[0]["value"][1]) <= 1.0, share

    def down_alert_pending() -> bool:
        alerts = stack.prometheus.api("alerts")["alerts"]
        return any(a["labels"]["alertname"] == "IntentserveDown" for a in alerts)

    deadline = time.monotonic() + 30
    while not down_alert_pending() and time.monotonic() < deadline:
        time.sleep(0.5)
    alerts = stack.prometheus.api("alerts")["alerts"]
    raised = sorted((a["labels"]["alertname"], a["labels"].get("instance"), a["state"]) for a in alerts)
    # The dead target is down (pending: `for: 1m`); the live service, with a model and no errors, raises nothing.
    assert raised == [("IntentserveDown", stack.dead, "pending")], raised
