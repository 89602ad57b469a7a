"""Liveness, readiness and the Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from app.api.deps import get_classifier, require_metrics_key
from app.api.errors import APIError, errors

router = APIRouter()


# HEAD too, for load balancers and uptime checks that probe with it; GET alone documents the answer.
@router.get("/healthz")
@router.head("/healthz", include_in_schema=False)
async def healthz() -> dict:
    """Liveness: the process answers (never needs a key, never waits for the model)."""
    return {"status": "ok"}


@router.get("/readyz", responses=errors(503))
@router.head("/readyz", include_in_schema=False)
async def readyz(request: Request) -> dict:
    """Readiness: 503 until the model is loaded and warmed up, and from the moment shutdown starts."""
    if request.app.state.draining:
        raise APIError(503, "shutting_down", "the service is shutting down", {"Retry-After": "1"})
    get_classifier(request)
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
