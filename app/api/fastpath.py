"""A direct route for well-formed POST /classify requests, beside FastAPI's.

Profiled under load, FastAPI's routing, dependency solving and response validation cost the event loop more
than the rest of a classify request, and that loop shares its GIL with the model thread. A request that is
well-formed (JSON object, valid fields within the limits, the right key, a ready model) is answered here with
the same checks, the same answer and the same errors from the classifier; any other request, and every
other path, goes on to the FastAPI app, which gives its usual error. The FastAPI route stays the contract:
the OpenAPI document, the validation messages and every error body come from it.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from starlette.requests import Request

from app.api.body import parse_json
from app.api.deps import check_key
from app.api.errors import APIError
from app.api.middleware import error_body, send_json
from app.api.routes.classify import run_texts, text_problem, top_k_problem
from app.api.schemas import ClassifyRequest

ASGIApp = Any


class ClassifyFastPath:
    """ASGI middleware: answers well-formed POST /classify itself, hands everything else to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/classify":
            await self.app(scope, receive, send)
            return
        messages = await _read_body(receive)
        request = Request(scope, receive)
        parsed = _well_formed(request, messages)
        if parsed is None:
            await self.app(scope, _replay(messages, receive), send)  # the FastAPI route gives the exact error
            return
        try:
            (answer,) = await run_texts(request, [parsed.text], parsed.top_k)
        except APIError as exc:
            headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (exc.headers or {}).items()]
            await send_json(send, exc.status, error_body(scope["state"]["request_id"], exc.code, exc.message), headers)
            return
        await send_json(send, 200, answer, [])


def _well_formed(request: Request, messages: list[dict]) -> ClassifyRequest | None:
    """The request, if the FastAPI route would take it as it is; None sends it there for its error."""
    state = request.app.state
    if state.classifier is None or not state.ready or messages[-1]["type"] != "http.request":
        return None
    body = b"".join(m.get("body", b"") for m in messages)
    try:
        check_key(request)  # ServiceMiddleware refused a wrong key already; this route never answers without one
        parsed = ClassifyRequest.model_validate(parse_json(body))
    except (APIError, ValueError, ValidationError):  # BodyError and JSONDecodeError are ValueErrors
        return None
    settings = state.settings
    if text_problem(parsed.text, settings.max_text_chars) or top_k_problem(parsed.top_k, settings.max_top_k):
        return None
    return parsed


async def _read_body(receive: Any) -> list[dict]:
    """The request's messages up to the end of its body, or up to the client leaving."""
    messages = []
    while True:
        message = await receive()
        messages.append(message)
        if message["type"] != "http.request" or not message.get("more_body", False):
            return messages


def _replay(messages: list[dict], receive: Any) -> Any:
    """A receive() that gives the messages already read, then whatever the client sends next."""
    pending = iter(messages)

    async def replay() -> dict:
        return next(pending, None) or await receive()

    return replay
