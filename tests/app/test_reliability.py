"""Overload (429), timeouts (504), disconnects, failing batches and draining, through the real app and fake model."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from app.core.config import Settings
from app.server import Server
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll the event loop until `condition` holds (the model runs in a thread, the app in this loop)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


def requests_total(metrics_text: str, endpoint: str, status: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for s in family.samples:
            if s.name == "intent_requests_total" and s.labels == {"endpoint": endpoint, "status": status}:
                return s.value
    return 0.0


async def test_overload_gives_429_stays_healthy_and_recovers(manifest_only_package: Path) -> None:
    settings = {"max_queue": 8, "max_batch_texts": 4, "max_batch_size": 1, "max_wait_ms": 0}
    async with running_app(manifest_only_package, "fake", **settings) as (client, app):
        backend = app.state.classifier.backend
        backend.gate.clear()  # the model holds its first call: the queue fills behind it
        base = len(backend.calls)
        tasks = [asyncio.create_task(client.post("/classify", json={"text": f"weather {i}"})) for i in range(30)]
        await until(lambda: sum(t.done() for t in tasks) >= 21)  # 30 - (1 in the model + 8 queued) refused at once
        await asyncio.sleep(0.05)
        refused = [t.result() for t in tasks if t.done()]
        # Overloaded, yet liveness, readiness, model info and metrics answer at once.
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
        info = await client.get("/v1/model")
        scrape = (await client.get("/metrics")).text
        backend.gate.set()
        responses = await asyncio.gather(*tasks)
        # Recovery: the queue is empty again and a full queue's worth is accepted at once.
        after = await asyncio.gather(*(client.post("/classify", json={"text": "weather"}) for _ in range(8)))
        final = (await client.get("/metrics")).text

    assert (health.status_code, ready.status_code, info.status_code) == (200, 200, 200)
    statuses = Counter(r.status_code for r in responses)
    assert set(statuses) == {200, 429}, statuses  # no 5xx, nothing else
    assert 21 <= statuses[429] <= 22
    assert statuses[200] == 30 - statuses[429]
    assert len(refused) == statuses[429]
    assert all(r.status_code == 429 for r in refused)
    r429 = refused[0]
    assert r429.headers["retry-after"] == "1"
    assert r429.json()["error"]["code"] == "overloaded"
    assert r429.json()["error"]["request_id"] == r429.headers["x-request-id"]
    assert requests_total(scrape, "/classify", "429") == statuses[429]
    assert sum(backend.calls[base:]) == statuses[200] + 8  # refused texts never reached the model
    assert all(r.status_code == 200 for r in after)
    assert requests_total(final, "/classify", "200") == statuses[200] + 8


async def test_batch_request_is_admitted_whole_or_not_at_all(manifest_only_package: Path) -> None:
    settings = {"max_queue": 6, "max_batch_texts": 4, "max_batch_size": 1, "max_wait_ms": 0}
    async with running_app(manifest_only_package, "fake", **settings) as (client, app):
        backend = app.state.classifier.backend
        queue = app.state.classifier.batcher.queue
        backend.gate.clear()
        base = len(backend.calls)
        first = asyncio.create_task(client.post("/classify", json={"text": "weather"}))
        await until(lambda: len(backend.calls) == base + 1)
        three = asyncio.create_task(client.post("/classify/batch", json={"texts": ["timer"] * 3}))
        await until(lambda: queue.qsize() == 3)
        refused = await client.post("/classify/batch", json={"texts": ["timer"] * 4})  # 3 + 4 > 6
        fits = asyncio.create_task(client.post("/classify/batch", json={"texts": ["timer"] * 3}))
        await until(lambda: queue.qsize() == 6)
        backend.gate.set()
        results = await asyncio.gather(first, three, fits)
    assert refused.status_code == 429
    assert [r.status_code for r in results] == [200, 200, 200]


async def test_timeout_gives_504_and_drops_queued_work(manifest_only_package: Path) -> None:
    settings = {"request_timeout_ms": 300, "max_batch_size": 1, "max_wait_ms": 0}
    async with running_app(manifest_only_package, "fake", **settings) as (client, app):
        backend = app.state.classifier.backend
        queue = app.state.classifier.batcher.queue
        backend.gate.clear()
        base = len(backend.calls)
        held = asyncio.create_task(client.post("/classify", json={"text": "weather held"}))
        await until(lambda: len(backend.calls) == base + 1)  # in the model, held at the gate
        queued = asyncio.create_task(client.post("/classify", json={"text": "weather queued"}))
        await until(lambda: queue.qsize() == 1)
        start = time.perf_counter()
        timed_out = await asyncio.gather(held, queued)
        waited = time.perf_counter() - start
        backend.gate.set()
        after = await client.post("/classify", json={"text": "weather"})
        metrics = (await client.get("/metrics")).text
    for r in timed_out:
        assert r.status_code == 504, r.text
        assert r.json()["error"]["code"] == "timeout"
        assert "300 ms" in r.json()["error"]["message"]
    assert waited < 2.0
    assert after.status_code == 200
    # The held call finished in the model (its answer discarded); the queued text was dropped unseen.
    assert backend.calls[base:] == [1, 1]
    assert requests_total(metrics, "/classify", "504") == 2


async def test_client_disconnect_while_queued_costs_no_model_time(
    manifest_only_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Drive the ASGI app as uvicorn does: the body, then an http.disconnect message when the client leaves."""
    caplog.set_level("INFO", logger="app")
    async with running_app(manifest_only_package, "fake", max_batch_size=1, max_wait_ms=0) as (client, app):
        backend = app.state.classifier.backend
        batcher = app.state.classifier.batcher
        backend.gate.clear()
        base = len(backend.calls)
        held = asyncio.create_task(client.post("/classify", json={"text": "weather"}))
        await until(lambda: len(backend.calls) == base + 1)

        left = asyncio.Event()
        body_sent = False
        sent: list[dict] = []

        async def receive() -> dict:
            nonlocal body_sent
            if not body_sent:
                body_sent = True
                return {"type": "http.request", "body": json.dumps({"text": "timer"}).encode(), "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/classify",
            "raw_path": b"/classify",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"content-type", b"application/json"), (b"host", b"testserver")],
            "client": ("127.0.0.1", 5000),
            "server": ("testserver", 80),
        }
        leaving = asyncio.create_task(app(scope, receive, send))
        await until(lambda: batcher.queue.qsize() == 1)
        item = batcher.queue._queue[0]  # the queued text of the client about to leave
        left.set()
        await asyncio.wait_for(leaving, 2)  # well before the 5 s request timeout
        assert item.future.cancelled()  # cancellation reached the queued work
        backend.gate.set()
        assert (await held).status_code == 200
        after = await client.post("/classify", json={"text": "weather"})
        metrics = (await client.get("/metrics")).text
    assert after.status_code == 200
    assert backend.calls[base:] == [1, 1]  # held + after: the departed client's text never ran
    assert sent[0]["status"] == 499
    assert requests_total(metrics, "/classify", "499") == 1
    closed = [r for r in caplog.records if "closed the connection before its answer" in r.getMessage()]
    assert [r.levelname for r in closed] == ["INFO"]  # logged, apart from real errors


async def test_failing_text_fails_only_itself(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake", max_batch_size=8, max_wait_ms=0) as (client, app):
        backend = app.state.classifier.backend
        queue = app.state.classifier.batcher.queue
        backend.gate.clear()
        base = len(backend.calls)
        # The second batch raises; of its texts retried one by one, only the second fails again.
        backend.fail_on = {base + 1, base + 3}
        first = asyncio.create_task(client.post("/classify", json={"text": "weather"}))
        await until(lambda: len(backend.calls) == base + 1)
        doomed = [asyncio.create_task(client.post("/classify", json={"text": "timer"})) for _ in range(3)]
        await until(lambda: queue.qsize() == 3)
        backend.gate.set()
        ok = await first
        failed = await asyncio.gather(*doomed)
        after = await client.post("/classify/batch", json={"texts": ["timer", "weather"]})
        ready = await client.get("/readyz")
    assert backend.calls[base:] == [1, 3, 1, 1, 1, 2]
    assert ok.status_code == 200
    assert [r.status_code for r in failed] == [200, 503, 200]
    assert [r.json()["intent"] for r in (failed[0], failed[2])] == ["timer", "timer"]
    for r in failed[1:2]:
        assert r.status_code == 503
        assert r.json()["error"] == {
            "code": "inference_failed",
            "message": "the model could not process this request; retry",
            "request_id": r.headers["x-request-id"],
        }
        assert "fake failure" not in r.text  # internals stay in the log
        assert r.headers["retry-after"] == "1"
    assert after.status_code == 200
    assert [x["intent"] for x in after.json()["results"]] == ["timer", "weather"]
    assert ready.status_code == 200


async def test_stop_signal_turns_readiness_503_while_requests_finish(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake", max_batch_size=1) as (client, app):
        backend = app.state.classifier.backend
        backend.gate.clear()
        inflight = asyncio.create_task(client.post("/classify", json={"text": "weather"}))
        await until(lambda: len(backend.calls) > 0 and not inflight.done())
        server = Server(uvicorn.Config(app), app)
        server.handle_exit(signal.SIGTERM, None)  # what uvicorn calls from its signal handler
        ready = await client.get("/readyz")
        health = await client.get("/healthz")
        backend.gate.set()
        done = await inflight
    assert server.should_exit
    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "shutting_down"
    assert health.status_code == 200
    assert done.status_code == 200  # accepted before the signal: answered
    assert signal.SIGTERM not in server._captured_signals  # not re-raised: a drained SIGTERM exits 0


def test_queue_must_hold_a_full_batch_request() -> None:
    with pytest.raises(ValidationError, match=r"INTENT_MAX_QUEUE \(4\) must be >= INTENT_MAX_BATCH_TEXTS \(8\)"):
        Settings(max_queue=4, max_batch_texts=8)


async def test_a_batch_that_times_out_is_logged_and_leaves_no_unretrieved_exception(
    manifest_only_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A cancelled gather of a batch's texts held a CancelledError nobody read: asyncio logged an ERROR for it."""
    import gc
    import logging

    from app.core.logs import RequestIdFilter

    loop = asyncio.get_running_loop()
    reported: list[str] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
    settings = {"request_timeout_ms": 300, "max_batch_size": 1, "max_wait_ms": 0}
    try:
        caplog.handler.addFilter(RequestIdFilter())  # as the service's log handler: the request id on each record
        with caplog.at_level(logging.INFO, logger="app"):
            async with running_app(manifest_only_package, "fake", **settings) as (client, app):
                backend = app.state.classifier.backend
                backend.gate.clear()
                texts = ["weather one", "weather two", "weather three"]
                r = await client.post("/classify/batch", json={"texts": texts}, headers={"x-request-id": "slow-1"})
                backend.gate.set()
                assert (await client.post("/classify", json={"text": "weather"})).status_code == 200
    finally:
        gc.collect()
        await asyncio.sleep(0.01)
        loop.set_exception_handler(previous)
    assert r.status_code == 504, r.text
    assert reported == []
    logged = [rec for rec in caplog.records if getattr(rec, "request_id", None) == "slow-1"]
    assert [rec.levelname for rec in logged] == ["WARNING"]
    assert "no answer within 300 ms" in logged[0].getMessage()
    assert "weather" not in logged[0].getMessage()  # texts never reach the logs
