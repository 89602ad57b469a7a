"""The ASGI app: settings -> load + warm up -> ready -> serve -> drain.

`create_app` is the factory (tests, `python -m app`, Ray Serve); the module-level `app` is built from the
environment for `uvicorn app.main:app` and `fastapi run app/main.py`. Building either loads no model: the
lifespan does, when the server starts.
"""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from app.api.errors import install_error_handlers
from app.api.fastpath import ClassifyFastPath
from app.api.middleware import ServiceMiddleware
from app.api.openapi import install_openapi
from app.api.routes import router
from app.core.config import OtelSettings, Settings
from app.core.logs import configure_logging
from app.guard import count_refusals
from app.metrics import Metrics
from app.service import IntentClassifier
from app.tracing import Tracing

logger = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether the service listens on this machine only (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def create_app(
    settings: Settings | None = None,
    classifier: IntentClassifier | None = None,
    *,
    configure_logs: bool = False,
    tracing: Tracing | None = None,
) -> FastAPI:
    """Build the ASGI app; the model is loaded in the lifespan unless one is passed in.

    `configure_logs`: set up the service's log handler at startup (for servers that do not, such as plain uvicorn).
    `tracing`: request spans to these exporters; by default as the OTEL_* variables say (app.tracing: off unless
    they ask; TracingError when they ask and the `tracing` extra is missing).
    """
    settings = settings or Settings()
    tracing = tracing or Tracing.from_settings(OtelSettings())
    metrics = classifier.metrics if classifier is not None else Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if configure_logs:
            configure_logging(settings.log_level, settings.log_format)
        if tracing is not None:
            tracing.start()  # here, not in create_app: in the serving process, after any fork
        gc_thresholds = gc.get_threshold()
        if settings.gc_full_after:
            gc.set_threshold(*gc_thresholds[:2], settings.gc_full_after)
        runtime = classifier or IntentClassifier.load(settings, metrics)
        runtime.set_info(1)
        await runtime.batcher.start()
        app.state.classifier = runtime
        app.state.ready = True
        if settings.api_key is None:
            open_api = "classify and model endpoints are open, admin endpoints disabled"
            if settings.open_key is not None or not is_loopback(settings.host):
                why = settings.open_key or f"no INTENT_API_KEY and INTENT_HOST {settings.host} is not loopback"
                logger.warning("%s: %s", why, open_api)
            else:
                logger.info("no INTENT_API_KEY: %s", open_api)
        for name in Settings.unknown_variables():  # python -m app refuses them; other launchers get a warning
            logger.warning("%s is not a setting; ignored", name)
        logger.info("ready: serving %s on backend %s", runtime.manifest.name, runtime.backend.name)
        stop_counting_refusals = count_refusals(metrics.http_refusal)  # the guard's, when it is the server's protocol
        try:
            yield
        finally:
            app.state.ready = False
            # The server has already finished (or given up on) its requests: drain what is left in the queue.
            await app.state.classifier.batcher.stop(settings.shutdown_timeout_s)
            if tracing is not None:
                tracing.shutdown(settings.trace_flush_timeout_s)  # exports the spans still buffered
            gc.set_threshold(*gc_thresholds)
            stop_counting_refusals()
            logger.info("stopped")

    # /docs and /redoc with Swagger UI and ReDoc served from the installed package: no CDN, so they work offline.
    # validatorUrl None: Swagger UI would otherwise fetch a badge from validator.swagger.io.
    app = FastAPIOffline(
        title="intentserve",
        version="0.1.0",
        summary="Intent classification (CLINC150) with an out-of-scope fallback",
        lifespan=lifespan,
        redirect_slashes=False,  # "/classify/" is an unknown path (404 in the error envelope), not a bare 307
        swagger_ui_parameters={"validatorUrl": None},
        # FastAPI's own OpenTelemetry (on whenever a global provider is set) stays off: the service's spans are
        # app.tracing's, which never record a text, and no request pays FastAPI's look-up of the global providers.
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.classifier = None
    app.state.ready = False
    app.state.draining = False  # set by the server on SIGTERM/SIGINT: readiness 503 while requests finish
    app.state.reload_lock = asyncio.Lock()
    app.state.tracing = tracing
    install_error_handlers(app)
    app.include_router(router)
    install_openapi(app, settings)
    app.add_middleware(ClassifyFastPath)  # inside ServiceMiddleware: ids, metrics, limits and spans stay as they are
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        max_inflight=settings.inflight_limit,
        tracing=tracing,
    )
    return app


# `uvicorn app.main:app` / `fastapi run app/main.py`: the INTENT_* settings of this process, model loaded at startup.
app = create_app(configure_logs=True)
