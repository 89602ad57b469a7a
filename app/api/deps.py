"""Route dependencies: the serving classifier and the API-key checks."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from app.api.errors import APIError
from app.core.config import Settings
from app.service import IntentClassifier


def _digest(secret: bytes) -> bytes:
    # Comparing fixed-size digests keeps the comparison constant-time whatever the lengths.
    return hashlib.sha256(secret).digest()


UNAUTHORIZED = "authentication required"


def key_matches(settings: Settings, authorization: str) -> bool:
    """Whether the service has no key, or this Authorization header value is `Bearer <key>`."""
    key = settings.api_key
    if key is None:
        return True
    scheme, _, token = authorization.partition(" ")
    # Headers arrive as latin-1 text: encoding back gives the client's exact bytes.
    given = token.strip().encode("latin-1") if scheme.lower() == "bearer" else b""
    return hmac.compare_digest(_digest(given), _digest(key.get_secret_value().encode()))


def one_header(values: list[str]) -> str:
    """The Authorization value when exactly one was sent; "" for several (which one counts would be a guess)."""
    return values[0] if len(values) == 1 else ""


def check_key(request: Request) -> None:
    """401 unless the service has no key or `Authorization: Bearer <key>` carries it (one message for any failure)."""
    if not key_matches(request.app.state.settings, one_header(request.headers.getlist("authorization"))):
        raise APIError(401, "unauthorized", UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})


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


def get_classifier(request: Request) -> IntentClassifier:
    """The serving runtime, or 503 until it is loaded and ready."""
    classifier = getattr(request.app.state, "classifier", None)
    if classifier is None or not request.app.state.ready:
        raise APIError(503, "not_ready", "the model is not loaded yet; retry shortly", {"Retry-After": "1"})
    return classifier
