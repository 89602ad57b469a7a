"""Helpers to run the real ASGI app (with its lifespan) against a package."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from app.package import read_manifest, write_manifest


@asynccontextmanager
async def running_app(package: Path, backend: str, **settings: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """Start the app's lifespan and yield an httpx client bound to it through ASGI."""
    app = create_app(Settings(model_dir=package, backend=backend, **settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client, app


@pytest.fixture(scope="session")
def manifest_only_package(tmp_path_factory: pytest.TempPathFactory, tiny_package: Path) -> Path:
    """A package with just a manifest: enough for the weight-free fake backend."""
    dst = tmp_path_factory.mktemp("fakepkg")
    manifest = read_manifest(tiny_package)
    manifest.metrics = {}
    write_manifest(dst, manifest)
    assert json.loads((dst / "manifest.json").read_text())["files"] == {}
    return dst
