"""Request bodies as JSON: UTF-8 only (RFC 8259), with a message that says what is wrong with the bytes."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

# FastAPI's own detail for a body its parser gave up on; the error handler answers it with its generic message.
FASTAPI_UNPARSABLE = "There was an error parsing the body"


class BodyError(ValueError):
    """A body that is not JSON text the service reads: its message is safe to show the client."""


def parse_json(body: bytes) -> Any:
    """The JSON value of a body; BodyError for bytes that are not UTF-8 or that no parser should take on.

    json.loads alone would read UTF-16 and UTF-32 as well, and let an encoded surrogate through as a character.
    A syntax error stays a json.JSONDecodeError.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"request body is not UTF-8 (byte {exc.start}: {exc.reason}); send JSON as UTF-8") from None
    try:
        return json.loads(text)
    except RecursionError:
        raise BodyError("request body is nested too deeply to parse") from None
    except json.JSONDecodeError:
        raise
    except ValueError as exc:  # int() past its digit limit: "Exceeds the limit (4300 digits) ..."
        raise BodyError(f"request body holds a number the parser refuses ({str(exc).split(';')[0]})") from None


class JSONRequest(Request):
    """A request whose json() is parse_json's."""

    async def json(self) -> Any:
        """The body's JSON value; a BodyError becomes a 400 that keeps its message."""
        if not hasattr(self, "_json"):
            try:
                self._json = parse_json(await self.body())
            except BodyError as exc:
                raise HTTPException(400, str(exc)) from None
        return self._json


class JSONRoute(APIRoute):
    """An APIRoute that reads request bodies with JSONRequest."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """FastAPI's handler, given a JSONRequest."""
        handler = super().get_route_handler()

        async def strict(request: Request) -> Response:
            return await handler(JSONRequest(request.scope, request.receive))

        return strict
