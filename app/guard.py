"""HTTP/1.1 limits per connection: header size and count, pipelining depth, read timeouts, connection count.

uvicorn's httptools protocol has none of these: an endless header section or an endless pipeline grows the
process without bound, a connection that sends nothing (or half a request) is held forever, and enough of them
exhaust the file descriptors. h11 bounds the header section but not the rest, and costs throughput. This is
httptools' protocol with the missing guards; every refusal is cheap (no ASGI task, no body read), and the refusals
a flood runs into (header size and count, pipelining depth) close in stages, holding a client that keeps sending.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol
from uvicorn.server import ServerState

from app.core.config import Settings

logger = logging.getLogger(__name__)
# One warning per this many seconds per kind of refusal: a flood of bad clients must not flood the log too.
LOG_EVERY_S = 10.0
# How long a connection refused for flooding stays open, unread, after its last answer and a FIN (RFC 9112 9.6's
# staged close). A client that honours `connection: close` leaves at once; one that keeps sending is held this
# long instead of being cut off at once and reconnecting to flood again.
LINGER_S = 2.0


@dataclass(frozen=True)
class HttpLimits:
    """The bounds one connection is held to (from the INTENT_* settings)."""

    max_header_bytes: int = 16384
    max_headers: int = 100
    max_pipelined: int = 16
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_connections: int = 1024

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        """The limits the settings ask for (MAX_CONNECTIONS resolved against the descriptor limit)."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            max_pipelined=settings.max_pipelined,
            header_timeout_s=settings.header_timeout_s,
            body_timeout_s=settings.body_timeout_s,
            max_connections=settings.connection_limit,
        )


# Who counts refusals: the serving app's metrics register in its lifespan (app.main). A refusal happens before any
# app code runs, so the protocol reports it to the process, not to an app.
_refusal_listeners: list[Callable[[str], None]] = []


def count_refusals(listener: Callable[[str], None]) -> Callable[[], None]:
    """Call `listener(reason)` on every refusal of this process's guard; returns the function that stops it."""
    _refusal_listeners.append(listener)
    return lambda: _refusal_listeners.remove(listener)


class _Refusal:
    """One kind of refusal: counted every time (listeners); logged the first time, then one line per LOG_EVERY_S."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        self.last = 0.0
        self.suppressed = 0

    def __call__(self, *args: object) -> None:
        for listener in _refusal_listeners:
            listener(self.reason)
        now = time.monotonic()
        if now - self.last < LOG_EVERY_S:
            self.suppressed += 1
            return
        extra = f" ({self.suppressed} more since the last such line)" if self.suppressed else ""
        logger.warning(self.message + extra, *args)
        self.last, self.suppressed = now, 0


_warn_connections = _Refusal(
    "connection_limit", "connection limit reached (%d open): refusing new connections with 503"
)
_warn_headers = _Refusal("headers_too_large", "refused a request head over the limit (%s): 431")
_warn_timeout = _Refusal("read_timeout", "closed a connection that did not send its request in time (%s)")
_warn_invalid = _Refusal(
    "invalid_http", "received input that is not valid HTTP/1.1: 400 after the answers owed, then close"
)
_warn_pipeline = _Refusal(
    "pipelining",
    "a connection pipelined more than %d requests: closing it after the request in progress, dropping the rest",
)
REFUSAL_REASONS = tuple(
    kind.reason for kind in (_warn_connections, _warn_headers, _warn_pipeline, _warn_timeout, _warn_invalid)
)


class _RefuseError(Exception):
    """Raised from a parser callback to stop parsing this connection's input at once."""


def _error(status: int, code: str, message: str, extra: bytes = b"") -> bytes:
    """A complete `connection: close` response with the service's error envelope and a fresh request id."""
    rid = os.urandom(8).hex()  # as app.api.middleware.request_id: the request was never parsed, so never the client's
    body = json.dumps({"error": {"code": code, "message": message, "request_id": rid}}).encode()
    return b"".join(
        [
            STATUS_LINE[status],
            b"content-type: application/json\r\n",
            b"content-length: %d\r\n" % len(body),
            b"x-request-id: %s\r\n" % rid.encode(),
            extra,
            b"connection: close\r\n\r\n",
            body,
        ]
    )


def _invalid_http() -> bytes:
    """The 400 for input that is not HTTP/1.1."""
    return _error(400, "invalid_http", "the request is not valid HTTP/1.1")


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, bounded: see the module docstring; `limits` is set by `guarded_protocol`."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.in_head = True  # between requests or inside a request's head (not in its body)
        self.head_bytes = 0  # bytes received since the current head began (an upper bound: see data_received)
        self.header_count = 0
        self.parsed_head_bytes = 0  # the current head's target and header fields, as parsed (see _count_head_bytes)
        self.received_any = False
        self.read_timer: asyncio.TimerHandle | None = None
        self.discarding = False  # input is no longer parsed: the connection closes after the answer in progress
        self.running: Any = None  # the request cycle whose ASGI task runs (queued ones wait in self.pipeline)
        self.refusal: tuple[int, str, str] | None = None  # set by a callback that raised _Refuse
        self.linger_timer: asyncio.TimerHandle | None = None
        self.bad_request_pending = False  # a 400 to send once the requests before the invalid input are answered

    # Connection lifecycle
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Refuse at once beyond the connection limit; otherwise start the clock for the first request."""
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            _warn_connections(len(self.connections) - 1)
            self.discarding = True
            self.connections.discard(self)
            message = "too many open connections; retry shortly"
            transport.write(_error(503, "overloaded", message, b"retry-after: 1\r\n"))
            transport.close()
            return
        self._arm(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop the timers with the connection."""
        self._disarm()
        if self.linger_timer is not None:
            self.linger_timer.cancel()
            self.linger_timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        """Count head bytes and start the header clock, then parse (httptools' own error handling kept)."""
        if self.discarding:
            return
        self.received_any = True
        self._unset_keepalive_if_required()
        if self.in_head:
            # The whole chunk counts toward the head it starts or continues: this bounds a head that never ends
            # (an endless header value). A head that ends within the read is counted exactly by the parser
            # callbacks (_count_head_bytes) instead, since on_headers_complete resets this count.
            self.head_bytes += len(data)
            if self.read_timer is None:
                self._arm(self.limits.header_timeout_s)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
            return
        except httptools.HttpParserError:
            if self.refusal is not None:  # a limit a flood runs into (header count, pipelining depth)
                self._refuse(*self.refusal, linger=True)
            else:
                self._bad_request()
            return
        if self.in_head and self.head_bytes > self.limits.max_header_bytes:
            _warn_headers(f"over {self.limits.max_header_bytes} bytes")
            message = f"request headers exceed {self.limits.max_header_bytes} bytes"
            self._refuse(431, "headers_too_large", message, linger=True)

    # Parser callbacks
    def on_message_begin(self) -> None:
        """A new request: its own header count and size."""
        super().on_message_begin()
        self.header_count = 0
        self.parsed_head_bytes = 0

    def on_url(self, url: bytes) -> None:
        """Count the target toward the head's size."""
        self._count_head_bytes(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        """Count header fields and their bytes; stop parsing past either limit."""
        self.header_count += 1
        if self.header_count > self.limits.max_headers:
            _warn_headers(f"over {self.limits.max_headers} header fields")
            self.refusal = (431, "headers_too_large", f"more than {self.limits.max_headers} header fields")
            raise _RefuseError
        self._count_head_bytes(len(name) + len(value) + 4)  # "name: value\r\n"
        super().on_header(name, value)

    def _count_head_bytes(self, n: int) -> None:
        # Exact for what the parser has read: a head that arrives whole in one read (up to 256 KiB) never reaches
        # data_received's check, which sees only heads still unfinished at the end of a read.
        self.parsed_head_bytes += n
        if self.parsed_head_bytes > self.limits.max_header_bytes:
            _warn_headers(f"over {self.limits.max_header_bytes} bytes")
            self.refusal = (431, "headers_too_large", f"request headers exceed {self.limits.max_header_bytes} bytes")
            raise _RefuseError

    def on_headers_complete(self) -> None:
        """Head done: switch to the body clock; refuse a request beyond the pipelining depth before queueing it."""
        self.in_head = False
        self.head_bytes = 0
        if self.parser.get_http_version() not in ("1.0", "1.1"):  # httptools takes any digit.digit
            raise _RefuseError  # no refusal set: data_received answers it as input that is not HTTP/1.1
        busy = self.cycle is not None and not self.cycle.response_complete
        if busy and len(self.pipeline) >= self.limits.max_pipelined:
            _warn_pipeline(self.limits.max_pipelined)
            self.refusal = (503, "overloaded", "too many pipelined requests")
            raise _RefuseError
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        """Request read whole: no read clock until the next request's first byte."""
        self.in_head = True
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        """Once the answers owed are sent: the pending 400, if any; reading stays paused while discarding."""
        if self.linger_timer is not None:  # the last answer of a staged close
            self.server_state.total_requests += 1
            return
        if self.bad_request_pending and not self.pipeline:
            self.server_state.total_requests += 1
            self.bad_request_pending = False
            if not self.transport.is_closing():
                self.transport.write(_invalid_http())
                self._linger()
            return
        super().on_response_complete()
        if self.discarding:  # uvicorn resumed reading for the next request; there is none to read
            self.flow.pause_reading()

    # Refusals
    def _refuse(self, status: int, code: str, message: str, linger: bool = False) -> None:
        """Answer `status` and close, or, with answers still owed, close after sending them (HTTP/1.1 order).

        With `linger` the close is staged (see `_linger`): for refusals of a flood, not of a slow client.
        """
        self.discarding = True
        self.refusal = None
        self._disarm()
        if self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # A request on this connection is still being answered: a response now would be taken as its. Read
            # nothing more, finish that answer, then close. Requests queued behind it are dropped, not answered:
            # answering them is the work a pipelining flood wants done (measured: ordinary clients got 14% more
            # answers during such a flood); a client resends unanswered requests (RFC 9112 9.3.2).
            self.pipeline.clear()
            cycle = self.running or self.cycle
            cycle.keep_alive = False
            if linger:  # the cycle closes the transport when its answer is sent: make that close staged
                cycle.transport = _StagedClose(self.transport, self._linger)
            self.flow.pause_reading()
            return
        self.transport.write(_error(status, code, message))
        if linger:
            self._linger()
        else:
            self.transport.close()

    def _bad_request(self) -> None:
        """Input that is not HTTP/1.1: answer the requests before it, in order, then 400 and a staged close.

        uvicorn's own handling answered 400 at once and closed: the valid requests pipelined before the invalid
        input lost their answers, and the request in progress failed writing to a closed transport.
        """
        _warn_invalid()
        self.discarding = True
        self._disarm()
        if self.transport.is_closing():
            return
        if self.pipeline and self.pipeline[0][0].more_body:
            self.pipeline.popleft()  # the newest queued request: the invalid input cut its body short
        running = self.running or self.cycle
        if running is not None and not running.response_complete and running.more_body:
            # The request in progress is the one cut short (nothing can be queued behind a body that has not
            # ended): its body will not come, and its answer is not owed.
            running.disconnected = True
            running.message_event.set()
        elif running is not None and not running.response_complete:
            self.bad_request_pending = True  # sent by on_response_complete after the last answer owed
            self.flow.pause_reading()
            return
        self.transport.write(_invalid_http())
        self._linger()

    def _linger(self) -> None:
        """Staged close: stop reading, send FIN after what is written, and close the socket LINGER_S later.

        Closing at once with unread input makes the kernel send a reset, which can destroy the answer before the
        client reads it; and a flooding client that ignores `connection: close` would reconnect and flood again
        at once. A client that honours the close ends the connection itself, which cancels the timer.
        """
        if self.transport.is_closing() or self.linger_timer is not None:
            return
        self.flow.pause_reading()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.linger_timer = self.loop.call_later(LINGER_S, self.transport.close)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """Remember which cycle is being answered (uvicorn only keeps the newest one, which may be queued)."""
        self.running = cycle
        super()._start_asgi_task(cycle, app)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self.read_timer = self.loop.call_later(seconds, self._read_timeout)

    def _disarm(self) -> None:
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None

    def _read_timeout(self) -> None:
        """The request (or the first one) did not arrive in time: 408 if it began, else just close."""
        self.read_timer = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused and not self.discarding:
            # Reading is paused by the server (a full pipeline or body buffer), not the client's slowness.
            self._arm(self.limits.header_timeout_s if self.in_head else self.limits.body_timeout_s)
            return
        phase = "headers" if self.in_head else "body"
        _warn_timeout(phase)
        if self.in_head and not self.received_any:
            self.discarding = True
            self.transport.close()
            return
        if not self.in_head and self.pipeline:
            # A queued request's body did not come: it can never be answered in order, nor the connection reused.
            self.discarding = True
            self.transport.close()
            return
        if not self.in_head and self.cycle is not None and not self.cycle.response_started:
            # The app is waiting for a body that will not come: it sees a disconnect, the client a 408.
            self.discarding = True
            self.transport.write(_error(408, "request_timeout", f"request {phase} not received in time"))
            self.cycle.disconnected = True
            self.cycle.message_event.set()
            self.transport.close()
            return
        self._refuse(408, "request_timeout", f"request {phase} not received in time")


class _StagedClose:
    """A transport whose close() is the protocol's staged close; everything else is the transport's own."""

    def __init__(self, transport: asyncio.Transport, close: Any) -> None:
        self._transport = transport
        self.close = close

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn.Config(http=...), holding these settings' limits."""
    return type("GuardedHttpToolsProtocol", (GuardedHttpToolsProtocol,), {"limits": HttpLimits.from_settings(settings)})


def __getattr__(name: str) -> type[GuardedHttpToolsProtocol]:
    """`app.guard:HttpProtocol`, the protocol with this environment's INTENT_* limits, for uvicorn's CLI.

    `uvicorn app.main:app --http app.guard:HttpProtocol` imports it by name; built on first access, when the
    environment is the server's.
    """
    if name == "HttpProtocol":
        return guarded_protocol(Settings())
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
