"""Serving with uvicorn: graceful SIGTERM (readiness 503 first, accepted requests finished, exit code 0)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from types import FrameType

import uvicorn
from fastapi import FastAPI

from app.batcher import INFERENCE_THREAD
from app.core.config import Settings
from app.main import create_app
from app.service import IntentClassifier

logger = logging.getLogger(__name__)


class Server(uvicorn.Server):
    """uvicorn's server, plus: readiness turns 503 the moment a stop signal arrives; SIGTERM exits 0."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        """Mark the app draining, then let uvicorn stop accepting and wait for in-flight requests."""
        if not self.app.state.draining:
            self.app.state.draining = True
            logger.info("%s: draining: readiness 503, finishing accepted requests", signal.Signals(sig).name)
        super().handle_exit(sig, frame)
        if sig == signal.SIGTERM:
            # uvicorn re-raises the signal after a graceful stop (exit 143); SIGTERM is the orchestrator's
            # ordinary "stop", so a clean drain should end with exit code 0.
            with contextlib.suppress(AttributeError, ValueError):
                self._captured_signals.remove(sig)


def serve(settings: Settings, classifier: IntentClassifier) -> int:
    """Run the app until a stop signal; returns the process exit code."""
    app = create_app(settings, classifier)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=None,  # keep our handler (text or JSON, with request ids) for uvicorn's loggers too
        access_log=False,
        timeout_graceful_shutdown=settings.shutdown_timeout_s,
    )
    server = Server(config, app)
    server.run()
    stuck = [t for t in threading.enumerate() if t.name.startswith(INFERENCE_THREAD)]
    for thread in stuck:
        thread.join(timeout=1.0)  # an idle worker exits at once after the executor's shutdown
    if any(t.is_alive() for t in stuck):
        # A model call that never returns would block the interpreter's exit (it joins executor threads):
        # the shutdown bound wins, and the exit code says the stop was not clean.
        logger.error("a model call is still running after the shutdown timeout; exiting without it")
        logging.shutdown()
        os._exit(1)
    return 0 if server.started else 3
