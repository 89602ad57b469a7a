"""Logging setup: text or JSON lines on stderr, each record tagged with the current request id (and trace)."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TextIO

from app.tracing import current_trace

# Set by the middleware for the duration of a request; tasks it starts inherit it.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds `request_id` (or "-" outside a request) to every record, and `trace_id`/`span_id` in a traced one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Tag the record; never drops it."""
        record.request_id = request_id_var.get() or "-"
        trace = current_trace.get()
        if trace is not None:
            record.trace_id = trace.trace_id
            record.span_id = trace.span_id
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id (+ trace_id, span_id, exception)."""

    def format(self, record: logging.LogRecord) -> str:
        """Render the record as a single-line JSON object."""
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) in `fmt` ("text" or "json") that adds request ids."""
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    return handler


def configure_logging(level: str, fmt: str) -> None:
    """Route every logger (uvicorn's included) through one stderr handler in the chosen format."""
    root = logging.getLogger()
    root.handlers[:] = [make_handler(fmt)]
    root.setLevel(level.upper())
