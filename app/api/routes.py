"""HTTP routes: classify, batch, health, readiness, metrics, model info."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.errors import APIError
from app.api.schemas import (
    BatchRequest,
    BatchResponse,
    ClassifyRequest,
    ClassifyResponse,
    ErrorResponse,
    ModelInfo,
)
from app.batcher import InferenceError
from app.service import IntentClassifier

router = APIRouter()
ERRORS = {
    400: {"model": ErrorResponse},
    413: {"model": ErrorResponse},
    422: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _classifier(request: Request) -> IntentClassifier:
    classifier = getattr(request.app.state, "classifier", None)
    if classifier is None or not request.app.state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet; retry shortly", {"Retry-After": "1"})
    return classifier


def _check_text(text: str, max_chars: int, where: str) -> None:
    if not text.strip():
        raise APIError(422, "invalid_request", f"{where}: must not be empty or whitespace only")
    if len(text) > max_chars:
        raise APIError(422, "invalid_request", f"{where}: {len(text)} characters exceeds the limit of {max_chars}")


def _check_top_k(top_k: int, max_top_k: int) -> None:
    if top_k > max_top_k:
        raise APIError(422, "invalid_request", f"top_k: must be at most {max_top_k}")


async def _run(classifier: IntentClassifier, texts: list[str], top_k: int) -> list[dict]:
    try:
        return await classifier.classify(texts, top_k)
    except InferenceError as exc:
        raise APIError(503, "inference_failed", "the model could not process this request; retry") from exc


@router.post("/classify", response_model=ClassifyResponse, responses=ERRORS)
async def classify(body: ClassifyRequest, request: Request) -> dict:
    """Classify one utterance; out-of-scope answers carry a fallback message."""
    settings = request.app.state.settings
    _check_text(body.text, settings.max_text_chars, "text")
    _check_top_k(body.top_k, settings.max_top_k)
    classifier = _classifier(request)
    (result,) = await _run(classifier, [body.text], body.top_k)
    return result


@router.post("/classify/batch", response_model=BatchResponse, responses=ERRORS)
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
    classifier = _classifier(request)
    return {"results": await _run(classifier, body.texts, body.top_k)}


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": ErrorResponse}})
async def readyz(request: Request) -> dict:
    """Readiness: 503 until the model is loaded and warmed up, and again while shutting down."""
    _classifier(request)
    return {"status": "ready"}


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


@router.get("/v1/model", response_model=ModelInfo, responses={503: {"model": ErrorResponse}})
async def model_info(request: Request) -> dict:
    """Summary of the loaded package's manifest."""
    classifier = _classifier(request)
    m = classifier.manifest
    return {
        "name": m.name,
        "backend": classifier.backend.name,
        "precision": classifier.backend.precision,
        "labels": len(m.labels),
        "oos_label": m.oos_label,
        "oos_threshold": classifier.threshold,
        "max_length": m.max_length,
        "domains": classifier.domains,
        "source": m.source,
        "metrics": {k: v.model_dump() for k, v in m.metrics.items()},
        "created_at": m.created_at,
    }
