"""HTTP routes: classify, batch, health, readiness, metrics, model info, admin reload."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.errors import APIError
from app.api.schemas import (
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ModelInfo,
    ReloadRequest,
    ReloadResponse,
    is_blank,
)
from app.batcher import InferenceError, QueueFullError
from app.core.config import Settings
from app.package import PackageError, PackagePathError, without_machine_paths
from app.reload import ReloadBusyError, reload_classifier
from app.service import IntentClassifier

logger = logging.getLogger(__name__)
router = APIRouter()

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


def _digest(secret: bytes) -> bytes:
    # Comparing fixed-size digests keeps the comparison constant-time whatever the lengths.
    return hashlib.sha256(secret).digest()


def check_key(request: Request) -> None:
    """401 unless the service has no key or `Authorization: Bearer <key>` carries it (one message for any failure)."""
    key = request.app.state.settings.api_key
    if key is None:
        return
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    # Headers arrive as latin-1 text: encoding back gives the client's exact bytes.
    given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
    if not hmac.compare_digest(_digest(given), _digest(key.get_secret_value().encode())):
        raise APIError(401, "unauthorized", "authentication required", {"WWW-Authenticate": "Bearer"})


# Plain dependencies rather than fastapi.security: which operations need the key depends on the settings,
# so app.api.openapi declares the security scheme itself.
async def require_key(request: Request) -> None:
    """Dependency of the classify, model and admin routes."""
    check_key(request)


async def require_metrics_key(request: Request) -> None:
    """/metrics is open unless INTENT_METRICS_REQUIRE_AUTH is true."""
    if request.app.state.settings.metrics_require_auth:
        check_key(request)


async def require_admin(request: Request) -> None:
    """Admin routes do not exist (404) without a key: an unguarded reload would be worse than none."""
    if request.app.state.settings.api_key is None:
        raise APIError(404, "not_found", "Not Found")
    check_key(request)


def _classifier(request: Request) -> IntentClassifier:
    classifier = getattr(request.app.state, "classifier", None)
    if classifier is None or not request.app.state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet; retry shortly", {"Retry-After": "1"})
    return classifier


def _check_text(text: str, max_chars: int, where: str) -> None:
    if is_blank(text):
        raise APIError(422, "invalid_request", f"{where}: must not be empty or whitespace only")
    if len(text) > max_chars:
        raise APIError(422, "invalid_request", f"{where}: {len(text)} characters exceeds the limit of {max_chars}")


def _check_top_k(top_k: int, max_top_k: int) -> None:
    if top_k > max_top_k:
        raise APIError(422, "invalid_request", f"top_k: must be at most {max_top_k}")


# Most answers come within milliseconds: a task watching for the client leaving is started only for the slow
# ones, so the common path costs no extra task (a per-request task measured ~15% of the event loop's CPU).
WATCH_DISCONNECT_AFTER_S = 0.02


async def _disconnected(request: Request) -> None:
    """Return when the client goes away: the body is read, so the next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _first_done(futures: list[asyncio.Future], timeout: float) -> None:
    """Wait until one of the futures is done or the timeout passes (asyncio.wait without its task/set overhead)."""
    if timeout <= 0 or any(f.done() for f in futures):
        return
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = asyncio.get_running_loop().call_later(timeout, wake)
    for future in futures:
        future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        for future in futures:
            future.remove_done_callback(wake)


async def _run(request: Request, texts: list[str], top_k: int) -> list[dict]:
    """Queue the texts, then wait for the answers, the request timeout or the client leaving: whichever is first."""
    classifier = _classifier(request)
    try:
        futures = classifier.submit(texts)  # same step as the lookup: a reload cannot slip in between
    except QueueFullError as exc:
        raise APIError(429, "overloaded", "too many requests are waiting; retry shortly", {"Retry-After": "1"}) from exc
    except InferenceError as exc:
        raise APIError(503, "shutting_down", "the service is shutting down; retry", {"Retry-After": "1"}) from exc
    timeout_ms = request.app.state.settings.request_timeout_ms
    answer: asyncio.Future = futures[0] if len(futures) == 1 else asyncio.gather(*futures)
    gone: asyncio.Future | None = None
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        await _first_done([answer], min(WATCH_DISCONNECT_AFTER_S, timeout_ms / 1000))
        if not answer.done():
            gone = asyncio.ensure_future(_disconnected(request))
            await _first_done([answer, gone], deadline - time.monotonic())
    finally:
        # Timed out, client gone, or this handler cancelled: queued texts are dropped before the model sees them.
        if gone is not None:
            gone.cancel()
        if not answer.done():
            answer.cancel()
        for future in futures:
            future.cancel()  # no-op for finished ones; with one failed text, the others still queued are dropped
    if answer.done() and not answer.cancelled():
        try:
            rows = [answer.result()] if len(futures) == 1 else answer.result()
        except InferenceError as exc:
            raise APIError(
                503, "inference_failed", "the model could not process this request; retry", {"Retry-After": "1"}
            ) from exc
        return classifier.answers(rows, top_k)
    if gone is not None and gone.done():
        # Nobody reads this answer; 499 (nginx's "client closed request") keeps it apart in the metrics.
        raise APIError(499, "client_closed", "the client closed the connection")
    raise APIError(504, "timeout", f"no answer within {timeout_ms:g} ms; retry later")


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=errors(400, 401, 413, 422, 429, 503, 504),
    dependencies=[Depends(require_key)],
)
async def classify(body: ClassifyRequest, request: Request) -> dict:
    """Classify one utterance; out-of-scope answers carry a fallback message."""
    settings = request.app.state.settings
    _check_text(body.text, settings.max_text_chars, "text")
    _check_top_k(body.top_k, settings.max_top_k)
    (result,) = await _run(request, [body.text], body.top_k)
    return result


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    responses=errors(400, 401, 413, 422, 429, 503, 504),
    dependencies=[Depends(require_key)],
)
async def classify_batch(body: BatchRequest, request: Request) -> dict:
    """Classify up to INTENT_MAX_BATCH_TEXTS utterances; results keep the request order."""
    settings = request.app.state.settings
    if not body.texts:
        raise APIError(422, "invalid_request", "texts: must contain at least one text")
    if len(body.texts) > settings.max_batch_texts:
        raise APIError(
            422,
            "invalid_request",
            f"texts: {len(body.texts)} texts exceeds the limit of {settings.max_batch_texts}",
        )
    for i, text in enumerate(body.texts):
        _check_text(text, settings.max_text_chars, f"texts.{i}")
    _check_top_k(body.top_k, settings.max_top_k)
    return {"results": await _run(request, body.texts, body.top_k)}


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers (never needs a key, never waits for the model)."""
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
async def readyz(request: Request) -> dict:
    """Readiness: 503 until the model is loaded and warmed up, and from the moment shutdown starts."""
    if request.app.state.draining:
        raise APIError(503, "shutting_down", "the service is shutting down", {"Retry-After": "1"})
    _classifier(request)
    return {"status": "ready"}


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"description": "Prometheus text exposition", "content": {"text/plain": {"schema": {"type": "string"}}}},
        **errors(401),
    },
    dependencies=[Depends(require_metrics_key)],
)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition (needs the key only with INTENT_METRICS_REQUIRE_AUTH=true)."""
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def _model_info(classifier: IntentClassifier, settings: Settings) -> dict:
    m = classifier.manifest
    return {
        "name": m.name,
        "backend": classifier.backend.name,
        "precision": classifier.backend.precision,
        "labels": len(m.labels),
        "oos_label": m.oos_label,
        "oos_score": classifier.oos_score,
        "oos_threshold": classifier.threshold,
        "max_length": m.max_length,
        "domains": classifier.domains,
        "source": without_machine_paths(m.source, settings.package_root),
        "metrics": {k: v.model_dump() for k, v in m.metrics.items()},
        "created_at": m.created_at,
    }


@router.get("/v1/model", response_model=ModelInfo, responses=errors(401, 503), dependencies=[Depends(require_key)])
async def model_info(request: Request) -> dict:
    """Summary of the loaded package's manifest."""
    return _model_info(_classifier(request), request.app.state.settings)


@router.post(
    "/admin/reload",
    response_model=ReloadResponse,
    responses=errors(400, 401, 403, 404, 409, 413, 422, 503),
    dependencies=[Depends(require_admin)],
)
async def reload(request: Request, body: ReloadRequest | None = None) -> dict:
    """Load, verify and warm up a package, then swap it in; on any failure the current one keeps serving."""
    _classifier(request)
    if request.app.state.settings.workers > 1:
        # A reload would swap the model in the one worker that got this request and leave the others as they are.
        raise APIError(
            409, "reload_unavailable", "hot reload needs INTENT_WORKERS=1; with several workers, restart the service"
        )
    model_dir = body.model_dir if body is not None else None
    try:
        old, new = await reload_classifier(request.app, model_dir)
    except ReloadBusyError as exc:
        raise APIError(409, "reload_in_progress", str(exc)) from exc
    except PackagePathError as exc:
        raise APIError(403, "path_forbidden", str(exc)) from exc
    except PackageError as exc:
        # An authenticated operator needs the reason (e.g. which file fails its sha256).
        raise APIError(409, "package_refused", str(exc)) from exc
    except Exception as exc:
        logger.exception("reload failed")
        raise APIError(409, "package_refused", "the package could not be loaded; see the service log") from exc
    return {"previous": old.manifest.name, "model": _model_info(new, request.app.state.settings)}
