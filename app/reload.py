"""Hot reload: load and fully validate a package off the event loop, then swap it in atomically."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import FastAPI

from app.service import IntentClassifier

logger = logging.getLogger(__name__)


class ReloadBusyError(RuntimeError):
    """Another reload is still loading."""


async def reload_classifier(app: FastAPI, model_dir: str | None) -> tuple[IntentClassifier, IntentClassifier]:
    """Replace app.state.classifier; returns (old, new). Raises PackageError and keeps the old one on a bad package."""
    lock: asyncio.Lock = app.state.reload_lock
    if lock.locked():
        raise ReloadBusyError("a reload is already in progress")
    async with lock:
        settings = app.state.settings
        old: IntentClassifier = app.state.classifier
        target = Path(model_dir) if model_dir else old.backend.package_dir
        # Verification (sha256), loading, the logits check and warm-up all run before anything is swapped.
        new = await asyncio.to_thread(IntentClassifier.load, settings, old.metrics, target)
        await new.batcher.start()
        # One attribute store: a request sees either runtime whole, and texts it queued stay with that runtime.
        app.state.classifier = new
        old.set_info(0)
        new.set_info(1)
        logger.info("reloaded: %r -> %r (%s)", old.manifest.name, new.manifest.name, new.backend.package_dir)
        await old.batcher.stop(settings.shutdown_timeout_s)  # drains what the old runtime accepted
        return old, new
