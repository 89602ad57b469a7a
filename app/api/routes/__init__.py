"""HTTP routes, one module per resource: classify, health (with readiness and metrics), model (with admin)."""

from __future__ import annotations

from fastapi import APIRouter

from app.api.routes import classify, health, model

router = APIRouter()
for module in (classify, health, model):  # this order is the OpenAPI document's
    router.include_router(module.router)
