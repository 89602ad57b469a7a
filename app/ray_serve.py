"""Ray Serve deployment: the same FastAPI app (`app.main.create_app`) in N replicas behind Ray's HTTP proxy.

Run it with `serve run app.ray_serve:app` (defaults), `serve run app.ray_serve:app_builder num_replicas=2`
or `serve run deploy/ray/serve_config.yaml`; see docs/deployment.md ("Ray Serve"). Needs the `ray` extra.

Each replica builds its app from `Settings()` read in the replica's own process (`INTENT_*` variables come
from the Ray runtime_env), and Ray Serve runs the app's lifespan there, so every replica loads, verifies and
warms up the model exactly as `python -m app` does. Only this wrapper adds the `X-Replica` response header.
The app is late-bound (`serve.ingress()` + `__serve_build_asgi_app__`, Ray 2.60): an app built at import
would read its settings in the driver and be pickled to the replicas.
"""

from __future__ import annotations

import errno
import logging
from typing import Any

from fastapi import FastAPI
from prometheus_client import start_http_server
from pydantic import BaseModel, ConfigDict, Field, model_validator
from ray import serve
from ray.serve import Application

from app.core.config import Settings
from app.core.logs import configure_logging
from app.main import create_app

logger = logging.getLogger(__name__)

REPLICA_HEADER = "x-replica"
REQUEST_ID_HEADER = b"x-request-id"
DEPLOYMENT_NAME = "IntentService"

Scope = dict[str, Any]
Message = dict[str, Any]


class RayServeArgs(BaseModel):
    """Ray-level options (`serve run ... key=value` or a config file's `args`); model settings stay INTENT_*."""

    model_config = ConfigDict(extra="forbid")

    num_replicas: int | None = Field(default=None, ge=1, description="fixed replica count; unset = autoscaling")
    min_replicas: int = Field(default=1, ge=0)
    max_replicas: int = Field(default=4, ge=1)
    target_ongoing_requests: float = Field(
        default=16.0, gt=0.0, description="autoscaling target per replica (requests being handled or queued)"
    )
    max_ongoing_requests: int = Field(
        default=64, ge=1, description="cap per replica; keep it above INTENT_MAX_BATCH_SIZE so batches can form"
    )
    num_cpus: float = Field(default=1.0, gt=0.0, description="Ray CPUs reserved per replica (match INTENT_NUM_THREADS)")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="first port of the per-replica /metrics exporters; unset = off"
    )
    metrics_port_count: int = Field(default=8, ge=1, le=256, description="ports tried from metrics_port on")

    @model_validator(mode="after")
    def _min_below_max(self) -> RayServeArgs:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) must be <= max_replicas ({self.max_replicas})")
        return self


class ReplicaHeaderMiddleware:
    """Pure-ASGI middleware: tags every HTTP response with the replica that produced it.

    Ray's proxy puts its request id (the client's X-Request-ID, or a fresh one) into the request and adds it
    to the response; the app's middleware reuses that id, so its own copy of the header is dropped here
    (one header, one value). An id the app refused (not a short token) keeps both headers, each honest.
    """

    def __init__(self, app: Any, replica: str) -> None:
        self.app = app
        self.header = (REPLICA_HEADER.encode(), replica.encode("latin-1"))

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        """Add the replica header to `http.response.start`; everything else passes through."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        proxy_id = next((v for k, v in scope.get("headers", []) if k == REQUEST_ID_HEADER), None)

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h != (REQUEST_ID_HEADER, proxy_id)]
                message["headers"] = [*headers, self.header]
            await send(message)

        await self.app(scope, receive, send_with_header)


def start_metrics_exporter(settings: Settings, registry: Any, first_port: int, count: int) -> tuple[Any, int]:
    """Serve the registry on the first free port of [first_port, first_port + count) at INTENT_HOST."""
    if settings.metrics_require_auth:
        # The exporter has no authentication: it must not open what INTENT_METRICS_REQUIRE_AUTH closes.
        raise ValueError("metrics_port cannot be used with INTENT_METRICS_REQUIRE_AUTH=true (the exporter has no auth)")
    for port in range(first_port, min(first_port + count, 65536)):
        try:
            server, _ = start_http_server(port, addr=settings.host, registry=registry)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return server, port
    raise RuntimeError(f"no free metrics port in {first_port}..{first_port + count - 1} on {settings.host}")


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class IntentService:
    """One replica: the project's FastAPI app, built and started inside the replica process."""

    def __init__(self, metrics_port: int | None = None, metrics_port_count: int = 8) -> None:
        self.metrics_port = metrics_port
        self.metrics_port_count = metrics_port_count
        self.replica = serve.get_replica_context().replica_id.unique_id
        self.exporter: Any = None

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Build the app from this process's settings; Ray Serve then runs its lifespan (load + warm-up)."""
        settings = Settings()
        configure_logging(settings.log_level, settings.log_format)  # as `python -m app`; Ray keeps stderr
        fastapi_app = create_app(settings)
        fastapi_app.add_middleware(ReplicaHeaderMiddleware, replica=self.replica)
        if self.metrics_port is not None:
            self.exporter, port = start_metrics_exporter(
                settings, fastapi_app.state.metrics.registry, self.metrics_port, self.metrics_port_count
            )
            logger.info("replica %s: metrics exporter on %s:%d", self.replica, settings.host, port)
        return fastapi_app

    def check_health(self) -> None:
        """Ray's periodic health check: fails until the lifespan has loaded the model, and after it stopped."""
        fastapi_app: FastAPI = self.app  # type: ignore[attr-defined]  # set by the ingress wrapper
        if not fastapi_app.state.ready:
            raise RuntimeError(f"replica {self.replica}: model not loaded")

    def __del__(self) -> None:
        """Free the exporter's port (the ingress wrapper has already run the app's lifespan shutdown)."""
        if getattr(self, "exporter", None) is not None:
            self.exporter.shutdown()
            self.exporter.server_close()
            self.exporter = None


def deployment_options(args: RayServeArgs) -> dict[str, Any]:
    """`Deployment.options()` for these args: a fixed replica count, or autoscaling between min and max."""
    options: dict[str, Any] = {
        "max_ongoing_requests": args.max_ongoing_requests,
        "ray_actor_options": {"num_cpus": args.num_cpus},
    }
    if args.num_replicas is not None:
        options["num_replicas"] = args.num_replicas
    else:
        options["autoscaling_config"] = {
            "min_replicas": args.min_replicas,
            "max_replicas": args.max_replicas,
            "target_ongoing_requests": args.target_ongoing_requests,
        }
    return options


def app_builder(args: RayServeArgs | dict[str, Any]) -> Application:
    """The Serve application for `serve run app.ray_serve:app_builder key=value` and config files."""
    if not isinstance(args, RayServeArgs):  # a dict: from Serve (CLI key=value, a config's `args`) or Python
        args = RayServeArgs.model_validate(args)
    return IntentService.options(**deployment_options(args)).bind(args.metrics_port, args.metrics_port_count)


app = app_builder(RayServeArgs())
