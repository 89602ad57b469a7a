"""Error responses: clear 4xx messages, 5xx bodies that never echo internals, and their OpenAPI descriptions."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.api.body import FASTAPI_UNPARSABLE
from app.api.schemas import ErrorResponse
from app.core.config import error_message

logger = logging.getLogger(__name__)


UNPARSABLE = "request body could not be parsed as JSON"
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}}
ERROR_DOCS: dict[int, tuple[str, dict]] = {
    400: ("body is not JSON or not a JSON object", {}),
    401: (
        "missing or wrong API key (when INTENT_API_KEY is set)",
        {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    ),
    403: ("package path outside INTENT_MODEL_ROOT", {}),
    404: ("not found (admin endpoints without INTENT_API_KEY)", {}),
    409: ("package refused (invalid, tampered, incompatible) or a reload already running", {}),
    413: ("body over INTENT_MAX_BODY_BYTES", {}),
    422: ("invalid field", {}),
    429: ("queue full (INTENT_MAX_QUEUE): retry after Retry-After", RETRY_AFTER),
    503: ("not ready, shutting down, or the model failed on this request's text", RETRY_AFTER),
    504: ("no answer within INTENT_REQUEST_TIMEOUT_MS", {}),
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for these error statuses, all with the error envelope."""
    return {
        code: {"model": ErrorResponse, "description": ERROR_DOCS[code][0], "headers": ERROR_DOCS[code][1]}
        for code in codes
    }


class APIError(Exception):
    """An error with a status, a stable code and a message safe to show the client."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def error_response(request: Request, status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    """The one error envelope used by every handler."""
    request_id = getattr(request.state, "request_id", None)
    body = {"error": {"code": code, "message": message, "request_id": request_id}}
    return JSONResponse(body, status_code=status, headers=headers)


def _describe(errors: list[dict]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{loc}: {error_message(err)}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Register handlers for our errors, validation errors, HTTP errors and everything else."""

    @app.exception_handler(APIError)
    async def api_error(request: Request, exc: APIError) -> JSONResponse:
        return error_response(request, exc.status, exc.code, exc.message, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return error_response(request, 400, "malformed_json", "request body is not valid JSON")
        whole_body = [e for e in errors if tuple(e.get("loc", ())) == ("body",)]
        if any(e.get("type") == "missing" for e in whole_body):  # no body at all: nothing that could be JSON
            return error_response(request, 400, "malformed_json", "request body is empty; send a JSON object")
        if whole_body:
            return error_response(request, 400, "invalid_body", "request body must be a JSON object")
        return error_response(request, 422, "invalid_request", _describe(errors))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # A body that is JSON to no parser here (app.api.body says why), or one FastAPI's gave up on.
            message = UNPARSABLE if exc.detail == FASTAPI_UNPARSABLE else str(exc.detail)
            return error_response(request, 400, "malformed_json", message)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status_code, "http_error")
        message = exc.detail if exc.status_code < 500 else "service error"
        return error_response(request, exc.status_code, code, str(message), getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unhandled(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s", request.url.path)
        return error_response(request, 500, "internal_error", "internal server error")
