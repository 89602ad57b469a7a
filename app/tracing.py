"""OpenTelemetry request tracing: off unless the standard OTEL_* variables ask for it.

The rule: tracing is on when OTEL_SDK_DISABLED is not `true` and either OTEL_TRACES_EXPORTER names exporters
(`otlp`, `console`; `none` anywhere in the list turns tracing off) or, with OTEL_TRACES_EXPORTER unset, an OTLP
endpoint is set (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Unlike the SDK's own default
(`otlp`), no variable means no tracing.

The SDK and the OTLP exporter (the `tracing` extra; opentelemetry-api itself comes with FastAPI) are imported only
when tracing is on. When it is off the request path pays an `is None` test in the middleware and a context-variable
read or two; no tracer exists. FastAPI's own telemetry is turned off (app.main): these are the service's only spans.

Each POST /classify or /classify/batch gets one server span. Its children are made when the request ends, from
times the batcher and the route recorded (so the model thread never touches the tracer and no context crosses
threads): `queue_wait`, then `tokenize` and `inference` for each model call the request's texts rode in (the
call's `batch.size` on `inference`), then `oos_decision`. Texts are never recorded, not even in part.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.core.config import OtelSettings

EXPORTERS = ("otlp", "console")
INSTALL_HINT = "pip install 'intentserve[tracing]'"
SERVICE_NAME = "intentserve"  # unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES names one
OTLP_PROTOCOL = "http/protobuf"

logger = logging.getLogger(__name__)


class TracingError(RuntimeError):
    """Tracing is asked for but cannot run: a missing extra, an unknown exporter, an unsupported protocol."""


@dataclass(eq=False, slots=True)
class BatchTiming:
    """Wall-clock times (time.time_ns) of one model call; recorded only for calls that carry a traced request."""

    size: int
    picked_ns: int  # the batch left the queue
    start_ns: int = 0  # the model thread began the call
    tokenized_ns: int = 0  # tokenization done, inference begins (0: the predict function does not say)
    end_ns: int = 0  # the call returned or raised
    failed: bool = False


@dataclass(eq=False, slots=True)
class RequestTrace:
    """One traced request: its span, its ids for the logs, and what the batcher and the route recorded."""

    span: Any
    trace_id: str
    span_id: str
    enqueued_ns: int = 0
    batches: list[BatchTiming] = field(default_factory=list)
    texts: int = 0
    model: str = ""
    backend: str = ""
    decision: tuple[int, int, int] | None = None  # start, end, texts judged out of scope


# Set by the middleware for the duration of a traced request (None when tracing is off).
current_trace: ContextVar[RequestTrace | None] = ContextVar("current_trace", default=None)


def requested_exporters(otel: OtelSettings) -> list[str]:
    """The exporters the OTEL_* variables ask for, lower-cased; empty means tracing is off."""
    if otel.sdk_disabled.strip().lower() == "true":
        return []
    names = [n.strip().lower() for n in otel.traces_exporter.split(",") if n.strip()]
    if not names:
        endpoint = (otel.exporter_otlp_traces_endpoint or otel.exporter_otlp_endpoint).strip()
        return ["otlp"] if endpoint else []
    return [] if "none" in names else list(dict.fromkeys(names))


def _why(otel: OtelSettings) -> str:
    """Which variable turned tracing on, for error messages."""
    if otel.traces_exporter.strip():
        return f"OTEL_TRACES_EXPORTER={otel.traces_exporter.strip()}"
    name = (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        if otel.exporter_otlp_traces_endpoint.strip()
        else "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    return f"{name} is set"


class Tracing:
    """The tracer of one app: built from the settings (no import), started and shut down by the app's lifespan."""

    def __init__(self, exporters: Sequence[Callable[[], Any]], *, batch: bool = True) -> None:
        # Factories, not exporters: the OTLP exporter opens its HTTP session where it is made, which should be
        # the serving process (after a fork), not the parent that checked the settings.
        self.exporters = list(exporters)
        self.batch = batch  # BatchSpanProcessor (export off the request path) or SimpleSpanProcessor (tests)
        self.provider: Any = None
        self.tracer: Any = None
        self._extract: Any = None
        self._server: Any = None
        self._in_context: Any = None
        self._error: Any = None
        self._made: list[Any] = []  # the exporters start() made, so a stuck shutdown can stop their retries

    @classmethod
    def from_settings(cls, otel: OtelSettings) -> Tracing | None:
        """None when tracing is off; TracingError when it is asked for but cannot run."""
        names = requested_exporters(otel)
        if not names:
            return None
        why = _why(otel)
        unknown = [n for n in names if n not in EXPORTERS]
        if unknown:
            raise TracingError(f"OTEL_TRACES_EXPORTER: unknown exporter {unknown[0]!r}; choose otlp, console or none")
        protocol = (otel.exporter_otlp_traces_protocol or otel.exporter_otlp_protocol).strip()
        if "otlp" in names and protocol and protocol != OTLP_PROTOCOL:
            raise TracingError(
                f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r} is not supported: traces go out as OTLP {OTLP_PROTOCOL} "
                "(a collector's port 4318)"
            )
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter
        except ImportError as exc:
            raise TracingError(
                f"tracing ({why}) needs a missing dependency ({exc.name}); install it with `{INSTALL_HINT}`"
            ) from None
        factories = {"otlp": OTLPSpanExporter, "console": ConsoleSpanExporter}
        return cls([factories[n] for n in names])

    def start(self) -> None:
        """Create the tracer provider and its exporters (the SDK reads its other OTEL_* variables here)."""
        from opentelemetry import propagate, trace
        from opentelemetry.sdk.resources import SERVICE_NAME as SERVICE_NAME_KEY
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        resource = Resource.create()
        if str(resource.attributes.get(SERVICE_NAME_KEY, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME_KEY: SERVICE_NAME}))
        # A provider of our own rather than the global one: each app (and each test) gets its own exporters.
        provider = TracerProvider(resource=resource)
        processor = BatchSpanProcessor if self.batch else SimpleSpanProcessor
        self._made = [make() for make in self.exporters]
        for exporter in self._made:
            provider.add_span_processor(processor(exporter))
        self.provider = provider
        self.tracer = provider.get_tracer("intentserve")
        # Looked up once here: a `from ... import` per request costs more than the attribute reads.
        self._extract = propagate.extract  # the OTEL_PROPAGATORS ones, W3C traceparent by default
        self._server = trace.SpanKind.SERVER
        self._in_context = trace.set_span_in_context
        self._error = trace.Status(trace.StatusCode.ERROR)

    def shutdown(self, timeout_s: float) -> None:
        """Export what is buffered and stop the exporters, giving the export at most timeout_s."""
        provider, self.provider, self.tracer = self.provider, None, None
        if provider is None:
            return
        # The OTLP exporter retries a collector that is down with back-off for up to OTEL_EXPORTER_OTLP_TIMEOUT
        # (10 s by default: 8 s measured), which would hold up the exit past a container's stop grace period.
        done = threading.Thread(target=provider.shutdown, name="trace-flush", daemon=True)
        done.start()
        done.join(timeout_s)
        if done.is_alive():
            for exporter in self._made:  # sets the exporter's shutdown event, which ends its back-off wait
                exporter.shutdown()
            done.join(1.0)
            logger.warning("trace export did not finish within %.1f s at shutdown; its spans were dropped", timeout_s)

    def begin(self, scope: dict[str, Any], request_id: str) -> RequestTrace | None:
        """Start the server span of a request, continuing a caller's trace (W3C traceparent); None before start."""
        if self.tracer is None:
            return None
        headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in scope.get("headers", ())}
        route = scope.get("path", "")
        span = self.tracer.start_span(
            f"POST {route}",
            context=self._extract(headers),
            kind=self._server,
            attributes={"http.request.method": "POST", "http.route": route, "request.id": request_id},
        )
        ids = span.get_span_context()
        return RequestTrace(span, format(ids.trace_id, "032x"), format(ids.span_id, "016x"))

    def finish(self, trace: RequestTrace, status: int) -> None:
        """Add the children from the recorded times, set the outcome, end the request span."""
        span = trace.span
        end_ns = time.time_ns()
        if span.is_recording():
            parent = self._in_context(span)

            def child(
                name: str, start: int, end: int, attributes: dict[str, Any] | None = None, ok: bool = True
            ) -> None:
                if start and end:
                    spawned = self.tracer.start_span(name, context=parent, attributes=attributes, start_time=start)
                    if not ok:
                        spawned.set_status(self._error)
                    spawned.end(end_time=max(start, end))

            if trace.enqueued_ns:
                picked = min((b.picked_ns for b in trace.batches), default=end_ns)  # never picked: waited to the end
                child("queue_wait", trace.enqueued_ns, picked)
            for batch in trace.batches:
                if batch.tokenized_ns:
                    child("tokenize", batch.start_ns, batch.tokenized_ns)
                    child("inference", batch.tokenized_ns, batch.end_ns, {"batch.size": batch.size}, not batch.failed)
                elif batch.failed:  # tokenization itself raised
                    child("tokenize", batch.start_ns, batch.end_ns, ok=False)
                else:
                    child("inference", batch.start_ns, batch.end_ns, {"batch.size": batch.size})
            if trace.decision is not None:
                start, end, oos = trace.decision
                child("oos_decision", start, end, {"oos.count": oos})
            span.set_attribute("http.response.status_code", status)
            if trace.texts:
                span.set_attributes(
                    {"request.texts": trace.texts, "model.name": trace.model, "model.backend": trace.backend}
                )
            if status >= 500:
                span.set_status(self._error)
        span.end(end_time=end_ns)
