"""Pure-ASGI middleware: admission control, body size limit, request ids, request metrics, request spans."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from app.api.deps import UNAUTHORIZED, key_matches, one_header
from app.core.logs import request_id_var
from app.metrics import Metrics
from app.tracing import Tracing, current_trace

logger = logging.getLogger(__name__)
INTERNAL = "internal server error"
Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CLASSIFY_ENDPOINTS = {"/classify", "/classify/batch"}
# POSTs whose key is checked before their body is read: a client without the key gets 401, whatever it sends.
KEYED_POSTS = {*CLASSIFY_ENDPOINTS, "/admin/reload"}
KNOWN_ENDPOINTS = {"/classify", "/classify/batch", "/healthz", "/readyz", "/metrics", "/v1/model", "/admin/reload"}
# A client's own X-Request-ID is kept only if it is a short token: it goes into logs and a response header.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def request_id(scope: Scope) -> str:
    """The client's X-Request-ID when it is a safe token, else a fresh random one."""
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if SAFE_REQUEST_ID.fullmatch(candidate):
                return candidate
            break
    return os.urandom(8).hex()  # 16 hex digits, as uuid4().hex[:16] but without building a UUID


def json_content_type(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The API speaks only JSON: read every POST body as JSON (`curl -d` sends a form content type)."""
    for name, value in headers:
        if name == b"content-type" and b"json" in value.lower():
            return headers
    return [*(h for h in headers if h[0] != b"content-type"), (b"content-type", b"application/json")]


def error_body(request_id: str, code: str, message: str) -> dict:
    """The error envelope (the same as app.api.errors.error_response's)."""
    return {"error": {"code": code, "message": message, "request_id": request_id}}


class BodyTooLarge(HTTPException):
    """Raised inside receive() when the streamed body passes the limit (rendered as 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


async def send_json(send: Send, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    """A JSON response straight onto the ASGI channel, with no Response object (encoded as Starlette's JSONResponse)."""
    payload = json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class ServiceMiddleware:
    """Counts every request by endpoint/status, times it, tags it with an id, caps body size, refuses overload."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: Metrics,
        max_body_bytes: int,
        max_inflight: int = 0,
        tracing: Tracing | None = None,
    ) -> None:
        self.app = app
        self.tracing = tracing  # None: tracing is off, and no request pays more than this attribute test
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_inflight = max_inflight  # classify requests in progress; 0 = no bound here (the queue's only)
        self.classify_inflight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in KNOWN_ENDPOINTS else "other"  # bounded label cardinality
        if scope.get("method") == "POST":
            scope["headers"] = json_content_type(scope.get("headers", []))
        rid = request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        token = request_id_var.set(rid)
        id_header = (b"x-request-id", rid.encode())
        status_holder = {"status": 500, "started": False}
        start = time.perf_counter()
        self.metrics.inflight.inc()
        trace = trace_token = None
        if self.tracing is not None and path in CLASSIFY_ENDPOINTS and scope.get("method") == "POST":
            trace = self.tracing.begin(scope, rid)
            trace_token = current_trace.set(trace)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        too_large = self._declared_too_large(scope)
        classify = path in CLASSIFY_ENDPOINTS
        received = 0
        keep_id = False
        admitted = False

        async def receive_wrapper() -> Message:
            nonlocal received, admitted
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise BodyTooLarge(self.max_body_bytes)
                # Counted from its last body byte: a client that sends half a body (and is cut off by the body
                # timeout) holds no admission slot meanwhile, so slow senders cannot get others refused.
                if classify and not admitted and not message.get("more_body", False):
                    admitted = True
                    self.classify_inflight += 1
            return message

        try:
            if scope.get("method") == "POST" and path in KEYED_POSTS and not self._key_accepted(scope):
                await self._reject_unauthorized(send_wrapper, rid)
            elif too_large:
                await self._reject_large(send_wrapper, rid)
            elif classify and scope.get("method") == "POST" and self._overloaded(scope):
                await self._reject_overloaded(send_wrapper, rid)
            else:
                try:
                    await self.app(scope, receive_wrapper, send_wrapper)
                except BodyTooLarge:
                    if not status_holder["started"]:
                        await self._reject_large(send_wrapper, rid)
                except Exception:
                    # Handled here rather than by Starlette's outermost handler: this runs while the request id is
                    # still set, so the log line carries it, and the 500 goes out with its X-Request-ID header.
                    logger.exception("unhandled error on %s", path)
                    if status_holder["started"]:
                        keep_id = True  # the server logs the error it gets next: with this request's id
                        raise
                    await send_json(send_wrapper, 500, error_body(rid, "internal_error", INTERNAL), [])
                except asyncio.CancelledError:
                    # The server gave up on the request (shutdown timeout): a 503 the client may retry elsewhere,
                    # rather than the server's bare 500.
                    if not status_holder["started"]:
                        with contextlib.suppress(Exception):
                            await self._reject_cancelled(send_wrapper, rid)
                    raise
        finally:
            if admitted:
                self.classify_inflight -= 1
            if trace is not None:
                self.tracing.finish(trace, status_holder["status"])
            if not keep_id:
                request_id_var.reset(token)
                if trace_token is not None:
                    current_trace.reset(trace_token)
            self.metrics.inflight.dec()
            self.metrics.child(self.metrics.requests, endpoint, str(status_holder["status"])).inc()
            self.metrics.child(self.metrics.request_duration, endpoint).observe(time.perf_counter() - start)

    def _declared_too_large(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    return int(value) > self.max_body_bytes
                except ValueError:
                    return False
        return False

    @staticmethod
    def _key_accepted(scope: Scope) -> bool:
        """The key check of the route (app.api.deps), made before the body is read or parsed."""
        settings = getattr(getattr(scope.get("app"), "state", None), "settings", None)
        if settings is None or settings.api_key is None:
            return True  # no key to check (or no app state: the route's own check runs)
        sent = [v.decode("latin-1") for k, v in scope.get("headers", []) if k == b"authorization"]
        return key_matches(settings, one_header(sent))

    async def _reject_unauthorized(self, send: Send, request_id: str) -> None:
        body = error_body(request_id, "unauthorized", UNAUTHORIZED)
        await send_json(send, 401, body, [(b"www-authenticate", b"Bearer")])

    def _overloaded(self, scope: Scope) -> bool:
        """Whether a classify request would only wait to be refused: decided before its body is read.

        Reading, parsing and validating the bodies of requests that the full queue then refuses costs the event
        loop (and the GIL it shares with the model thread) most of its time under overload: goodput collapses.
        """
        if self.max_inflight and self.classify_inflight >= self.max_inflight:
            return True
        app = scope.get("app")
        classifier = getattr(getattr(app, "state", None), "classifier", None)
        batcher = getattr(classifier, "batcher", None)
        return bool(batcher is not None and batcher.max_queue and batcher.queue.qsize() >= batcher.max_queue)

    async def _reject_overloaded(self, send: Send, request_id: str) -> None:
        body = error_body(request_id, "overloaded", "too many requests are waiting; retry shortly")
        await send_json(send, 429, body, [(b"retry-after", b"1")])

    async def _reject_cancelled(self, send: Send, request_id: str) -> None:
        body = error_body(request_id, "shutting_down", "the service stopped before answering; retry")
        await send_json(send, 503, body, [(b"retry-after", b"1")])

    async def _reject_large(self, send: Send, request_id: str) -> None:
        body = error_body(request_id, "body_too_large", f"request body exceeds {self.max_body_bytes} bytes")
        await send_json(send, 413, body, [])
