"""/metrics: the agreed names and labels, counts that move, valid Prometheus text."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio

EXPECTED = {
    "intent_requests": ("counter", {"endpoint", "status"}),
    "intent_request_duration_seconds": ("histogram", {"endpoint"}),
    "intent_inference_duration_seconds": ("histogram", {"backend"}),
    "intent_queue_wait_seconds": ("histogram", set()),
    "intent_batch_size": ("histogram", set()),
    "intent_inline_batches": ("counter", set()),
    "intent_predictions": ("counter", {"intent"}),
    "intent_oos": ("counter", {"reason"}),
    "intent_inflight_requests": ("gauge", set()),
    "intent_model_info": ("gauge", {"model", "backend", "precision"}),
}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


async def test_names_types_and_labels(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx") as (client, _):
        await client.post("/classify", json={"text": "transfer money"})
        text = (await client.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in EXPECTED.items():
        assert name in families, name
        assert families[name].type == kind, name
        for s in families[name].samples:
            assert set(s.labels) - {"le"} == labels, (name, s.labels)
    assert value(text, "intent_model_info", model="tiny-bert", backend="onnx", precision="fp32") == 1.0
    # Latency buckets resolve from 0.5 ms to 2 s.
    les = {s.labels["le"] for s in families["intent_request_duration_seconds"].samples if "le" in s.labels}
    assert {"0.0005", "2.0", "+Inf"} <= les


async def test_counts_move(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx-int8", oos_threshold=0.3) as (client, _):
        before = (await client.get("/metrics")).text
        await client.post("/classify", json={"text": "transfer money"})
        await client.post("/classify", json={"text": "what is the dow stock"})
        await client.post("/classify/batch", json={"texts": ["set a timer", "is it sunny", "send money"]})
        await client.post("/classify", json={"text": ""})
        after = (await client.get("/metrics")).text

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("intent_requests_total", endpoint="/classify", status="200") == 2
    assert delta("intent_requests_total", endpoint="/classify/batch", status="200") == 1
    assert delta("intent_requests_total", endpoint="/classify", status="422") == 1
    assert delta("intent_requests_total", endpoint="/metrics", status="200") == 1  # the first scrape
    assert delta("intent_predictions_total", intent="transfer") == 2
    assert delta("intent_predictions_total", intent="oos") == 1
    assert delta("intent_oos_total", reason="oos_label") == 1
    assert delta("intent_request_duration_seconds_count", endpoint="/classify") == 3
    assert delta("intent_batch_size_sum") == 5  # five texts went through the model
    assert delta("intent_queue_wait_seconds_count") == 5
    assert delta("intent_inference_duration_seconds_count", backend="onnx-int8") >= 3
    assert value(after, "intent_inflight_requests") == 1.0  # only the scrape itself is in flight


@pytest.mark.parametrize(("backend", "inline"), [("onnx-int8", 3), ("fake", 0)])
async def test_lone_requests_run_on_the_event_loop_and_are_counted(
    tiny_package: Path, manifest_only_package: Path, backend: str, inline: int
) -> None:
    package = manifest_only_package if backend == "fake" else tiny_package
    async with running_app(package, backend, inline_max_ms=50) as (client, _):
        before = (await client.get("/metrics")).text
        for text in ("transfer money", "set a timer", "is it sunny", "send money"):
            assert (await client.post("/classify", json={"text": text})).status_code == 200
        assert (await client.post("/classify/batch", json={"texts": ["a", "b", "c"]})).status_code == 200
        after = (await client.get("/metrics")).text
    # The first call is timed in the model thread, the next three run inline, the batch of three does not; the fake
    # backend, which tests hold and slow, never runs on the loop.
    assert value(after, "intent_inline_batches_total") - value(before, "intent_inline_batches_total") == inline
    assert value(after, "intent_batch_size_count") - value(before, "intent_batch_size_count") == 5


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool (Debian package prometheus) not installed")
async def test_promtool_check_metrics(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx") as (client, _):
        await client.post("/classify", json={"text": "transfer money"})
        text = (await client.get("/metrics")).text
    proc = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
