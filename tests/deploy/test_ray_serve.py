"""Ray Serve (app/ray_serve.py): config files against Ray's own schema (fast), and a real local Ray instance
serving the tiny package from 2 replicas over HTTP (slow).

Skipped without the `ray` extra (`pip install -e '.[ray]'`).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.app.conftest import running_app

ray = pytest.importorskip("ray", reason="ray is not installed (extra `ray`: pip install -e '.[ray]')")
serve = pytest.importorskip("ray.serve", reason="ray[serve] is not installed (extra `ray`)")
serve_schema = pytest.importorskip("ray.serve.schema")

from app.ray_serve import REPLICA_HEADER, RayServeArgs, app_builder, deployment_options  # noqa: E402  (needs ray)

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO_ROOT / "deploy" / "ray" / "serve_config.yaml"
RAYSERVICE = REPO_ROOT / "deploy" / "ray" / "rayservice.yaml"
HOST = "127.0.0.1"
BACKEND = "onnx"
REPLICAS = 2
ROUNDS = 6  # concurrent rounds sent until both replicas have answered
ROUND_SIZE = 12
PROXY_READY_TIMEOUT_S = 60  # the Serve controller's wait for a new proxy (Ray's default: 5 s)
TEXTS = [
    "please transfer my money",
    "what is the weather now",
    "set a timer for ten minutes",
    "how do i say hello in spanish",
    "how much is in my account",
    "what is the dow stock doing",
]
METRIC_NAMES = ("intent_requests_total", "intent_request_duration_seconds", "intent_model_info", "intent_batch_size")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def free_port_range(count: int) -> int:
    """The first of `count` consecutive ports free on loopback right now."""
    for _ in range(50):
        first = free_port()
        if first + count > 65535:
            continue
        try:
            sockets = []
            for port in range(first, first + count):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sockets.append(s)
                s.bind((HOST, port))
            return first
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    pytest.fail(f"no {count} consecutive free ports on {HOST}")


def classify_count(metrics_text: str) -> float:
    """intent_requests_total{endpoint="/classify",status="200"} in one exposition."""
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "intent_requests":
            for sample in family.samples:
                if sample.name == "intent_requests_total" and sample.labels == {
                    "endpoint": "/classify",
                    "status": "200",
                }:
                    return sample.value
    return 0.0


# --- fast: the config files are valid Serve configs and point at this module --------------------------------


def serve_configs() -> dict[str, dict[str, Any]]:
    """The Serve config of serve_config.yaml and the serveConfigV2 embedded in rayservice.yaml."""
    rayservice = next(d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d["kind"] == "RayService")
    return {
        "serve_config.yaml": yaml.safe_load(SERVE_CONFIG.read_text()),
        "rayservice.yaml": yaml.safe_load(rayservice["spec"]["serveConfigV2"]),
    }


@pytest.mark.parametrize("name", ["serve_config.yaml", "rayservice.yaml"])
def test_config_is_a_valid_serve_config_for_this_app(name: str) -> None:
    config = serve_schema.ServeDeploySchema.model_validate(serve_configs()[name])
    (application,) = config.applications
    assert application.import_path == "app.ray_serve:app_builder"
    RayServeArgs.model_validate(application.args)  # the builder would accept these args
    (deployment,) = application.deployments
    assert deployment.name == "IntentService"
    autoscaling = deployment.autoscaling_config
    assert autoscaling["min_replicas"] <= autoscaling["max_replicas"], autoscaling
    env = application.runtime_env["env_vars"]
    assert {"INTENT_MODEL_DIR", "INTENT_BACKEND", "INTENT_NUM_THREADS"} <= env.keys(), env


def test_rayservice_embeds_the_serve_config() -> None:
    configs = serve_configs()
    assert configs["rayservice.yaml"]["applications"] == configs["serve_config.yaml"]["applications"]


def test_every_way_of_starting_ray_gives_the_proxy_the_timeout_the_test_needs() -> None:
    rayservice = next(d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d["kind"] == "RayService")
    head = rayservice["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e["value"] for e in head["env"]}
    assert env["RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S"] == str(PROXY_READY_TIMEOUT_S)
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert f"PROXY_READY_TIMEOUT_S ?= {PROXY_READY_TIMEOUT_S}\n" in makefile
    assert "RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S=$(PROXY_READY_TIMEOUT_S)" in makefile
    docs = " ".join((REPO_ROOT / "docs" / "deployment.md").read_text().split())
    assert f"RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S={PROXY_READY_TIMEOUT_S}`" in docs


def test_builder_options() -> None:
    assert deployment_options(RayServeArgs(num_replicas=3))["num_replicas"] == 3
    scaled = deployment_options(RayServeArgs(min_replicas=2, max_replicas=5, target_ongoing_requests=4))
    assert "num_replicas" not in scaled
    assert scaled["autoscaling_config"] == {"min_replicas": 2, "max_replicas": 5, "target_ongoing_requests": 4}
    assert isinstance(app_builder({"num_replicas": "2", "metrics_port": "9500"}), serve.Application)  # CLI strings
    with pytest.raises(ValueError, match="min_replicas"):
        app_builder({"min_replicas": 5, "max_replicas": 2})
    with pytest.raises(ValueError, match="extra"):
        app_builder({"replicas": 2})


# --- slow: a real local Ray instance, 2 replicas, HTTP through Ray's proxy ------------------------------------


@pytest.fixture(scope="module")
def ray_serve_url(tiny_package: Path) -> Iterator[tuple[str, int]]:
    """(proxy URL, first per-replica metrics port) of the app on a local Ray instance with 2 replicas."""
    proxy_port, metrics_port = free_port(), free_port_range(8)
    env = {
        "INTENT_MODEL_DIR": str(tiny_package),
        "INTENT_BACKEND": BACKEND,
        "INTENT_NUM_THREADS": "1",
        "INTENT_WARMUP_RUNS": "1",
        "INTENT_HOST": HOST,  # the per-replica metrics exporters bind here
        "OMP_NUM_THREADS": "1",
    }
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RAY_USAGE_STATS_ENABLED", "0")
        # The Serve controller gives a new proxy 5 s to report ready, then kills it after three misses; on a
        # saturated CPU (CI's 2 cores running other tests) a proxy can miss that, and serve.start dies with it.
        mp.setenv("RAY_SERVE_PROXY_READY_CHECK_TIMEOUT_S", str(PROXY_READY_TIMEOUT_S))
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 1024**2,
            runtime_env={"env_vars": env},
            logging_level=logging.WARNING,
        )
    try:
        serve.start(http_options={"host": HOST, "port": proxy_port})
        args = RayServeArgs(num_replicas=REPLICAS, num_cpus=0.5, metrics_port=metrics_port, metrics_port_count=8)
        serve.run(app_builder(args), name="intentserve", route_prefix="/")
        url = f"http://{HOST}:{proxy_port}"
        deadline = time.monotonic() + 60
        while True:  # the proxy may take a moment more than the application
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Ray Serve proxy not ready after 60 s"
            time.sleep(0.5)
        yield url, metrics_port
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


async def reference_answers(package: Path) -> dict[str, dict]:
    """What the in-process app (same package and backend) answers for each text."""
    answers = {}
    async with running_app(package, BACKEND, num_threads=1) as (client, _):
        for text in TEXTS:
            r = await client.post("/classify", json={"text": text, "top_k": 2})
            assert r.status_code == 200, r.text
            answers[text] = r.json()
    return answers


async def send_rounds(url: str) -> list[httpx.Response]:
    """Concurrent rounds of /classify through the proxy until both replicas answered (or ROUNDS rounds)."""
    responses: list[httpx.Response] = []
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        for round_ in range(ROUNDS):
            texts = [TEXTS[(round_ + i) % len(TEXTS)] for i in range(ROUND_SIZE)]
            responses += await asyncio.gather(*(client.post("/classify", json={"text": t, "top_k": 2}) for t in texts))
            if len({r.headers.get(REPLICA_HEADER) for r in responses}) >= REPLICAS:
                break
    return responses


def exporter_texts(first_port: int, count: int) -> list[str]:
    """The expositions of every per-replica metrics exporter found in the port range."""
    texts = []
    for port in range(first_port, first_port + count):
        try:
            r = httpx.get(f"http://{HOST}:{port}/metrics", timeout=2)
        except httpx.TransportError:
            continue
        if r.status_code == 200 and "intent_requests_total" in r.text:
            texts.append(r.text)
    return texts


@pytest.mark.slow
def test_two_replicas_serve_the_same_answers_and_their_own_metrics(
    ray_serve_url: tuple[str, int], tiny_package: Path
) -> None:
    url, metrics_port = ray_serve_url
    expected = asyncio.run(reference_answers(tiny_package))
    started = time.perf_counter()
    responses = asyncio.run(send_rounds(url))
    logger.info("%d requests through Ray Serve in %.2f s", len(responses), time.perf_counter() - started)

    # Real answers, identical to the in-process app's.
    for r in responses:
        assert r.status_code == 200, r.text
        body = r.json()
        want = expected[json.loads(r.request.content)["text"]]
        assert body["model"] == "tiny-bert", body
        assert body["backend"] == BACKEND, body
        assert (body["intent"], body["oos"]) == (want["intent"], want["oos"]), (body, want)
        assert body["confidence"] == pytest.approx(want["confidence"], abs=1e-4)
        assert [a["intent"] for a in body["alternatives"]] == [a["intent"] for a in want["alternatives"]]
        assert len(r.headers.get_list("x-request-id")) == 1, r.headers  # Ray's and the app's ids, merged

    # Both replicas served.
    served = collections.Counter(r.headers.get(REPLICA_HEADER) for r in responses)
    assert None not in served, f"a response without {REPLICA_HEADER}: {served}"
    assert len(served) == REPLICAS, f"replicas seen: {dict(served)} over {len(responses)} requests"

    # The batch route and a client's request id, through the proxy.
    r = httpx.post(f"{url}/classify/batch", json={"texts": TEXTS}, headers={"x-request-id": "ray-test-1"}, timeout=30)
    assert r.status_code == 200, r.text
    assert [a["intent"] for a in r.json()["results"]] == [expected[t]["intent"] for t in TEXTS]
    assert r.headers.get_list("x-request-id") == ["ray-test-1"], r.headers

    # /metrics through Ray's route: the exposition of whichever replica answered.
    r = httpx.get(f"{url}/metrics", timeout=10)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain"), r.headers
    assert r.headers.get(REPLICA_HEADER) in served
    for name in METRIC_NAMES:
        assert name in r.text, name
    assert 'intent_model_info{backend="onnx",model="tiny-bert"' in r.text

    # Per-replica exporters: one per replica, each counting exactly the requests its replica answered.
    deadline = time.monotonic() + 10
    while True:  # the middleware counts a request just after its response is sent
        counts = sorted(classify_count(t) for t in exporter_texts(metrics_port, 8))
        if counts == sorted(served.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert counts == sorted(served.values()), f"exporters: {counts}, responses per replica: {dict(served)}"
