"""OpenTelemetry tracing through the real app: the span tree, batch sizes, no text in spans, traceparent, trace ids
in logs, off by default (nothing imported), the missing-extra error, and OTLP to a local collector."""

from __future__ import annotations

import asyncio
import io
import itertools
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from app.core.config import OtelSettings, Settings
from app.core.logs import make_handler
from app.main import create_app
from app.tracing import Tracing, TracingError, requested_exporters

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
CHILDREN = ["queue_wait", "tokenize", "inference", "oos_decision"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def no_otel_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean slate: no OTEL_* variable of the calling shell decides a test."""
    for name in list(os.environ):
        if name.startswith("OTEL_"):
            monkeypatch.delenv(name)
    return monkeypatch


@asynccontextmanager
async def traced_app(package: Path, backend: str, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any, Any]]:
    """The real app with tracing to an in-memory exporter (spans exported as each one ends)."""
    exporter = InMemorySpanExporter()
    tracing = Tracing([lambda: exporter], batch=False)
    app = create_app(Settings(model_dir=package, backend=backend, **settings), tracing=tracing)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app, exporter


def requests_and_children(spans: tuple[ReadableSpan, ...]) -> dict[str, tuple[ReadableSpan, list[ReadableSpan]]]:
    """Request id -> (server span, its children by start time)."""
    out = {}
    for span in spans:
        if span.kind == SpanKind.SERVER:
            kids = [s for s in spans if s.parent is not None and s.parent.span_id == span.context.span_id]
            out[span.attributes["request.id"]] = (span, sorted(kids, key=lambda s: (s.start_time, s.end_time)))
    assert sum(len(kids) + 1 for _, kids in out.values()) == len(spans), "a span belongs to no request"
    return out


def assert_in_order(request: ReadableSpan, children: list[ReadableSpan]) -> None:
    """Each child lies inside the request and ends before the next one starts."""
    assert request.start_time <= children[0].start_time
    for before, after in itertools.pairwise(children):
        assert before.start_time <= before.end_time <= after.start_time, (before.name, after.name)
    assert children[-1].end_time <= request.end_time
    for child in children:
        assert child.context.trace_id == request.context.trace_id
        assert child.kind == SpanKind.INTERNAL


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8"])
async def test_every_request_has_a_span_with_the_four_children(tiny_package: Path, backend: str) -> None:
    async with traced_app(tiny_package, backend) as (client, _, exporter):
        one = await client.post("/classify", json={"text": "please transfer my money"})
        # Five texts take the tokenizer's grouped path (sorted by length, padded per group).
        many = await client.post("/classify/batch", json={"texts": ["what is the weather"] * 4 + ["set a timer"]})
    assert one.status_code == many.status_code == 200
    traced = requests_and_children(exporter.get_finished_spans())
    assert len(traced) == 2
    for response, route, texts in ((one, "/classify", 1), (many, "/classify/batch", 5)):
        request, children = traced[response.headers["x-request-id"]]
        assert request.name == f"POST {route}"
        assert request.attributes["http.request.method"] == "POST"
        assert request.attributes["http.route"] == route
        assert request.attributes["http.response.status_code"] == 200
        assert request.attributes["request.texts"] == texts
        assert request.attributes["model.name"] == "tiny-bert"
        assert request.attributes["model.backend"] == backend
        assert request.status.status_code == StatusCode.UNSET
        assert [c.name for c in children] == CHILDREN
        assert_in_order(request, children)
        assert children[2].attributes["batch.size"] == texts
        assert all(c.end_time > c.start_time for c in children if c.name != "tokenize")
    request, children = traced[one.headers["x-request-id"]]
    assert children[-1].attributes["oos.count"] == int(one.json()["oos"])


async def test_batch_size_counts_the_requests_that_shared_a_model_call(manifest_only_package: Path) -> None:
    async with traced_app(manifest_only_package, "fake") as (client, app, exporter):
        backend = app.state.classifier.backend
        backend.gate.clear()  # the first request's model call waits here while three more queue behind it
        held = len(backend.calls)
        first = asyncio.create_task(client.post("/classify", json={"text": "what is the weather"}))
        while len(backend.calls) == held:
            await asyncio.sleep(0.005)
        rest = [asyncio.create_task(client.post("/classify", json={"text": f"set a timer {i}"})) for i in range(3)]
        while app.state.classifier.batcher.queue.qsize() < 3:
            await asyncio.sleep(0.005)
        backend.gate.set()
        responses = [await first, *await asyncio.gather(*rest)]
    assert [r.status_code for r in responses] == [200] * 4
    assert backend.calls[held:] == [1, 3]
    traced = requests_and_children(exporter.get_finished_spans())
    inference = {}
    for response in responses:
        request, children = traced[response.headers["x-request-id"]]
        assert [c.name for c in children] == CHILDREN
        assert_in_order(request, children)
        inference[response.headers["x-request-id"]] = children[2]
    sizes = [inference[r.headers["x-request-id"]].attributes["batch.size"] for r in responses]
    assert sizes == [1, 3, 3, 3]
    shared = {(s.start_time, s.end_time) for s in (inference[r.headers["x-request-id"]] for r in responses[1:])}
    assert len(shared) == 1  # one model call, seen from each of its three requests
    # The three waited in the queue while the first one's call was held.
    waits = [traced[r.headers["x-request-id"]][1][0] for r in responses[1:]]
    assert all(w.end_time >= inference[responses[0].headers["x-request-id"]].end_time for w in waits)


async def test_a_batch_request_over_several_model_calls_has_a_pair_per_call(manifest_only_package: Path) -> None:
    async with traced_app(manifest_only_package, "fake", max_batch_size=2) as (client, _, exporter):
        r = await client.post("/classify/batch", json={"texts": [f"what is the weather {i}" for i in range(5)]})
    assert r.status_code == 200
    ((request, children),) = requests_and_children(exporter.get_finished_spans()).values()
    names = [c.name for c in children]
    assert names == ["queue_wait", *["tokenize", "inference"] * 3, "oos_decision"]
    assert [c.attributes["batch.size"] for c in children if c.name == "inference"] == [2, 2, 1]
    assert_in_order(request, children)
    assert request.attributes["request.texts"] == 5


async def test_the_text_is_never_recorded(manifest_only_package: Path) -> None:
    secret = "zqxjv"
    async with traced_app(manifest_only_package, "fake", max_text_chars=40) as (client, _, exporter):
        statuses = [
            (await client.post("/classify", json={"text": f"what is the {secret} weather"})).status_code,
            (
                await client.post("/classify/batch", json={"texts": [f"{secret} timer", f"balance {secret}"]})
            ).status_code,
            (await client.post("/classify", json={"text": f"{secret} " * 20})).status_code,  # too long
            (await client.post("/classify", json={"txt": secret})).status_code,  # no `text`
            (await client.post("/classify", content=f'{{"text": "{secret}')).status_code,  # broken JSON
        ]
    assert statuses == [200, 200, 422, 422, 400]
    spans = exporter.get_finished_spans()
    assert len([s for s in spans if s.kind == SpanKind.SERVER]) == 5
    for span in spans:
        dumped = span.to_json()  # name, attributes, events, links, status, resource: all of it
        assert secret not in dumped, dumped
        assert "weather" not in dumped
        assert "timer" not in dumped


async def test_a_callers_traceparent_is_continued(manifest_only_package: Path) -> None:
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with traced_app(manifest_only_package, "fake") as (client, _, exporter):
        r = await client.post(
            "/classify", json={"text": "what is the weather"}, headers={"traceparent": f"00-{trace_id}-{parent_id}-01"}
        )
        plain = await client.post("/classify", json={"text": "what is the weather"})
    traced = requests_and_children(exporter.get_finished_spans())
    request, children = traced[r.headers["x-request-id"]]
    assert format(request.context.trace_id, "032x") == trace_id
    assert format(request.parent.span_id, "016x") == parent_id
    assert request.parent.is_remote
    assert {format(c.context.trace_id, "032x") for c in children} == {trace_id}
    other, _ = traced[plain.headers["x-request-id"]]
    assert other.parent is None
    assert format(other.context.trace_id, "032x") != trace_id


async def test_error_responses_are_traced_with_their_status(manifest_only_package: Path) -> None:
    async with traced_app(manifest_only_package, "fake") as (client, app, exporter):
        blank = await client.post("/classify", json={"text": "   "})
        missing = await client.post("/classify", json={})
        backend = app.state.classifier.backend
        backend.fail_on = {len(backend.calls)}  # the next model call raises
        failed = await client.post("/classify", json={"text": "what is the weather"})
    assert (blank.status_code, missing.status_code, failed.status_code) == (422, 422, 503)
    traced = requests_and_children(exporter.get_finished_spans())
    for response in (blank, missing):
        request, children = traced[response.headers["x-request-id"]]
        assert request.attributes["http.response.status_code"] == 422
        assert request.status.status_code == StatusCode.UNSET  # the client's error, not the service's
        assert children == []  # never queued
    request, children = traced[failed.headers["x-request-id"]]
    assert request.attributes["http.response.status_code"] == 503
    assert request.status.status_code == StatusCode.ERROR
    assert [c.name for c in children] == ["queue_wait", "tokenize", "inference"]  # no decision on a failed call
    assert children[2].status.status_code == StatusCode.ERROR
    assert children[1].status.status_code == StatusCode.UNSET


@contextmanager
def json_log() -> Iterator[io.StringIO]:
    """The service's JSON log handler on the root logger, into a string."""
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


async def fail_one_request(client: httpx.AsyncClient, app: Any) -> httpx.Response:
    backend = app.state.classifier.backend
    backend.fail_on = {len(backend.calls)}
    return await client.post("/classify", json={"text": "what is the weather"})


async def test_log_lines_carry_the_trace_id(manifest_only_package: Path) -> None:
    with json_log() as stream:
        async with traced_app(manifest_only_package, "fake") as (client, app, exporter):
            r = await fail_one_request(client, app)
    assert r.status_code == 503
    (request, _) = requests_and_children(exporter.get_finished_spans())[r.headers["x-request-id"]]
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    # Logged by the batcher's worker, outside the request's task: the ids travel with the queued text.
    failure = next(rec for rec in records if rec["message"].startswith("inference failed on a text"))
    assert failure["request_id"] == r.headers["x-request-id"]
    assert failure["trace_id"] == format(request.context.trace_id, "032x")
    assert failure["span_id"] == format(request.context.span_id, "016x")
    ready = next(rec for rec in records if rec["message"].startswith("ready: serving"))
    assert "trace_id" not in ready  # outside any request


async def test_untraced_log_lines_have_no_trace_id(manifest_only_package: Path, no_otel_env: Any) -> None:
    with json_log() as stream:
        app = create_app(Settings(model_dir=manifest_only_package, backend="fake"))
        assert app.state.tracing is None
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            r = await fail_one_request(client, app)
    assert r.status_code == 503
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    failure = next(rec for rec in records if rec["message"].startswith("inference failed on a text"))
    assert failure["request_id"] == r.headers["x-request-id"]
    assert "trace_id" not in failure
    assert "span_id" not in failure


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "INTENT_"))}
    return env | extra


OFF_PROBE = """
import asyncio, json, sys
import httpx
from app.core.config import Settings
from app.main import create_app

async def main():
    app = create_app(Settings(model_dir=sys.argv[1], backend="fake"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            r = await client.post("/classify", json={"text": "what is the weather"})
    # opentelemetry-api comes with FastAPI; the SDK and the exporters are the `tracing` extra's.
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.exporter")))
    print(json.dumps({"status": r.status_code, "tracing": app.state.tracing is not None, "loaded": loaded}))

asyncio.run(main())
"""


@pytest.mark.parametrize(
    "env",
    [{}, {"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "console"}, {"OTEL_TRACES_EXPORTER": "console"}],
    ids=["default", "sdk-disabled", "on"],
)
def test_off_by_default_imports_no_opentelemetry_sdk(manifest_only_package: Path, env: dict[str, str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", OFF_PROBE, str(manifest_only_package)],
        cwd=ROOT,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["status"] == 200
    on = env.get("OTEL_TRACES_EXPORTER") == "console" and "OTEL_SDK_DISABLED" not in env
    assert result["tracing"] is on
    if on:  # the probe itself works: the console exporter printed the request's span
        assert "opentelemetry.sdk.trace" in result["loaded"]
        assert '"name": "POST /classify"' in proc.stdout
    else:
        assert result["loaded"] == []


GLOBAL_PROBE = """
import asyncio, json, sys
import httpx
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from app.core.config import Settings
from app.main import create_app

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)  # what `opentelemetry-instrument` or an embedding program would do

async def main():
    app = create_app(Settings(model_dir=sys.argv[1], backend="fake"))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            ok = await client.post("/classify", json={"text": "what is the weather"})
            bad = await client.post("/classify", json={"text": 7})
    with trace.get_tracer("probe").start_as_current_span("probe"):
        pass
    names = [s.name for s in exporter.get_finished_spans()]
    print(json.dumps({"status": [ok.status_code, bad.status_code], "spans": names}))

asyncio.run(main())
"""


def test_fastapis_own_telemetry_stays_off_with_a_global_provider(manifest_only_package: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", GLOBAL_PROBE, str(manifest_only_package)],
        cwd=ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"status": [200, 422], "spans": ["probe"]}  # the provider works; the app added nothing


@pytest.mark.parametrize(
    ("env", "why"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "OTEL_TRACES_EXPORTER=otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT is set"),
    ],
)
def test_tracing_without_its_extra_is_one_clear_line(
    manifest_only_package: Path, env: dict[str, str], why: str
) -> None:
    # As if the `tracing` extra were not installed: the SDK cannot be imported (the API comes with FastAPI).
    code = "import runpy, sys; sys.modules['opentelemetry.sdk'] = None; runpy.run_module('app', run_name='__main__')"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=clean_env(INTENT_MODEL_DIR=str(manifest_only_package), INTENT_BACKEND="fake", INTENT_PORT="1", **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    line = proc.stderr.strip()
    assert "\n" not in line
    assert re.fullmatch(
        rf"intentserve: error: tracing \({re.escape(why)}\) needs a missing dependency \(opentelemetry\.sdk[\w.]*\); "
        r"install it with `pip install 'intentserve\[tracing\]'`",
        line,
    ), line


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": " Console , otlp"}, ["console", "otlp"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, []),
        ({"OTEL_TRACES_EXPORTER": "console,none"}, []),
        ({"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "console"}, []),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "console"}, ["console"]),
        ({"OTEL_SERVICE_NAME": "checkout", "OTEL_TRACES_SAMPLER": "always_on"}, []),
    ],
)
def test_the_otel_variables_decide(no_otel_env: pytest.MonkeyPatch, env: dict[str, str], exporters: list[str]) -> None:
    for name, value in env.items():
        no_otel_env.setenv(name, value)
    assert requested_exporters(OtelSettings()) == exporters
    tracing = Tracing.from_settings(OtelSettings())
    assert (tracing is None) == (not exporters)
    if tracing is not None:
        assert len(tracing.exporters) == len(exporters)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "OTEL_TRACES_EXPORTER: unknown exporter 'zipkin'"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "'grpc' is not supported"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"}, "grpc"),
    ],
)
def test_what_cannot_be_met_is_refused(no_otel_env: pytest.MonkeyPatch, env: dict[str, str], message: str) -> None:
    for name, value in env.items():
        no_otel_env.setenv(name, value)
    with pytest.raises(TracingError, match=message):
        Tracing.from_settings(OtelSettings())


class Collector(BaseHTTPRequestHandler):
    """An OTLP/HTTP trace receiver that keeps the request bodies."""

    bodies: list[tuple[str, bytes]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        self.bodies.append((self.path, body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_otlp_reaches_a_collector_named_only_by_the_environment(
    manifest_only_package: Path, no_otel_env: pytest.MonkeyPatch
) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    bodies: list[tuple[str, bytes]] = []
    handler = type("Handler", (Collector,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    no_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_address[1]}")
    try:
        app = create_app(Settings(model_dir=manifest_only_package, backend="fake"))
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        ):
            r = await client.post("/classify", json={"text": "what is the weather"})
        # Leaving the lifespan shut the provider down, which exported the buffered spans.
    finally:
        server.shutdown()
        server.server_close()
    assert r.status_code == 200
    assert bodies
    assert {path for path, _ in bodies} == {"/v1/traces"}
    names, services = [], set()
    for _, body in bodies:
        assert b"weather" not in body
        export = ExportTraceServiceRequest.FromString(body)
        for resource_spans in export.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            services.add(attributes["service.name"])
            names += [s.name for scope in resource_spans.scope_spans for s in scope.spans]
    assert services == {"intentserve"}
    assert sorted(names) == sorted(["POST /classify", *CHILDREN])


async def test_a_collector_that_is_down_does_not_hold_up_the_shutdown(
    manifest_only_package: Path, no_otel_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nothing listens on: every export attempt is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    no_otel_env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    flush = 1.0
    app = create_app(Settings(model_dir=manifest_only_package, backend="fake", trace_flush_timeout_s=flush))
    transport = httpx.ASGITransport(app=app)
    with caplog.at_level(logging.WARNING, logger="app.tracing"):
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                r = await client.post("/classify", json={"text": "what is the weather"})
            stopping = time.perf_counter()
        stopped = time.perf_counter() - stopping
    assert r.status_code == 200
    # Unbounded, the exporter's back-off (1 + 2 + 4 s within its 10 s timeout) kept the process for about 8 s.
    assert stopped < flush + 2.0, f"shutdown took {stopped:.1f} s with the collector down"
    assert any("spans were dropped" in m for m in caplog.messages), caplog.messages
