"""The OpenAPI document, completed with what depends on the settings: input limits and who needs the key."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from app.api.schemas import NOT_BLANK
from app.core.config import Settings

# Operations behind INTENT_API_KEY (plus GET /metrics with INTENT_METRICS_REQUIRE_AUTH).
PROTECTED = [("/classify", "post"), ("/classify/batch", "post"), ("/v1/model", "get"), ("/admin/reload", "post")]


def describe_settings(schema: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """Write this instance's limits and security into a generated OpenAPI document (in place)."""
    models = schema["components"]["schemas"]
    text_limits = {"minLength": 1, "maxLength": settings.max_text_chars, "pattern": NOT_BLANK}
    models["ClassifyRequest"]["properties"]["text"].update(text_limits)
    models["BatchRequest"]["properties"]["texts"].update(minItems=1, maxItems=settings.max_batch_texts)
    models["BatchRequest"]["properties"]["texts"]["items"].update(text_limits)
    for name in ("ClassifyRequest", "BatchRequest"):
        models[name]["properties"]["top_k"]["maximum"] = settings.max_top_k
    if settings.api_key is not None:
        schema["components"]["securitySchemes"] = {
            "bearer": {"type": "http", "scheme": "bearer", "description": "the service's INTENT_API_KEY"}
        }
        protected = PROTECTED + ([("/metrics", "get")] if settings.metrics_require_auth else [])
        for path, method in protected:
            schema["paths"][path][method]["security"] = [{"bearer": []}]
    return schema


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Serve the completed document at /openapi.json (built once, on first request)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
            app.openapi_schema = describe_settings(schema, settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
