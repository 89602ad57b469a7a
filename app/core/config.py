"""Service settings: the only place that reads the environment (prefix INTENT_, plus the standard OTEL_ tracing
variables)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def error_message(error: dict) -> str:
    """A pydantic validation error's message, without the "Value error, " it puts before a validator's own."""
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


# INTENT_ variables that are not settings of the service: docker-compose.yml reads them on the host.
NOT_SETTINGS = frozenset({"INTENT_PUBLISH_PORT"})


class Settings(BaseSettings):
    """All runtime configuration; each field is INTENT_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="INTENT_", env_file=".env", extra="ignore")

    model_dir: Path = Path("models/clinc150-minilm")
    model_root: Path | None = Field(
        default=None, description="packages must resolve inside this folder; default: MODEL_DIR's parent"
    )
    backend: str = "onnx-int8"
    oos_threshold: float | None = Field(
        default=None, allow_inf_nan=False, description="override of the package's threshold, on its oos_score's scale"
    )
    num_threads: int = Field(default=0, ge=0, description="model threads per worker; 0 = cores / workers")
    # On x86 without VNNI ORT's int8-weight kernels saturate (app.cpu): exact answers cost 15-23% more time per
    # query there (docs/experiments.md, "int8 and the CPU"); false trades the package's measured answers for it.
    exact_int8: bool = Field(
        default=True, description="onnx-int8 on x86 without VNNI: compute int8 weights exactly (uint8 kernels)"
    )
    workers: int = Field(default=1, ge=1, le=64, description="server processes sharing the port (one model each)")
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    # 0: no fixed wait. Texts that arrive while the model runs form the next batch anyway; a fixed wait only
    # delays the callers (measured: 2 ms cut req/s by 20-40% at 8-32 connections, docs/experiments.md).
    max_wait_ms: float = Field(default=0.0, ge=0.0, le=1000.0)
    # A lone text at light load runs on the event loop when one-text calls take at most this long: at one connection
    # that saved about 0.2 ms of a 1.9-2.5 ms answer (docs/experiments.md). The bound caps how long the loop is busy.
    inline_max_ms: float = Field(default=3.0, ge=0.0, le=50.0)
    # Each full collection scans every tracked object: with 10,000 connections open that is 474,000 objects and
    # passes of 68-219 ms that free nothing, one each time the old objects grow by a quarter (docs/experiments.md).
    gc_full_after: int = Field(default=100, ge=0, le=1_000_000)
    # Room for one request per connection of a 1,000-connection burst (about 1 s of queue for a 6-layer int8 model
    # on 2 cores): refusing instead, to closed-loop clients that retry at once, spends the loop on 429s.
    max_queue: int = Field(default=1024, ge=1, description="texts waiting for the model; beyond it 429")
    request_timeout_ms: float = Field(default=5000.0, gt=0.0, description="queue wait + inference; beyond it 504")
    shutdown_timeout_s: float = Field(default=20.0, gt=0.0, description="bound on draining accepted requests")
    trace_flush_timeout_s: float = Field(
        default=2.0, gt=0.0, le=60.0, description="bound on exporting buffered spans at shutdown (tracing on)"
    )
    # Longer than the idle timeout of the clients and proxies in front (HTTP clients 5 s, cloud load balancers
    # 60 s): when both sides use the same value, the server can close an idle connection at the moment the
    # client reuses it, and that request fails (seen once in a 78k-request soak with uvicorn's 5 s default).
    keep_alive_s: float = Field(default=75.0, gt=0.0, le=3600.0, description="idle keep-alive connection lifetime")
    # Limits on what one connection may cost (app.guard): a hostile or broken client must not hold memory,
    # descriptors or the event loop that other clients need.
    max_header_bytes: int = Field(
        default=16384, ge=1024, le=1048576, description="request line + headers of one request; beyond it 431"
    )
    max_headers: int = Field(default=100, ge=8, le=10000, description="header fields in one request; beyond it 431")
    max_pipelined: int = Field(
        default=16,
        ge=1,
        le=1024,
        description="requests queued behind the one being answered on a connection; one more and the connection "
        "is closed once that answer is sent, the queued ones dropped (for the client to resend)",
    )
    header_timeout_s: float = Field(
        default=10.0,
        gt=0.0,
        le=3600.0,
        description="from a connection's opening (or a request's first byte) to the end of the request's headers; "
        "beyond it 408 (nothing sent yet: just closed)",
    )
    body_timeout_s: float = Field(
        default=30.0,
        gt=0.0,
        le=3600.0,
        description="from the end of a request's headers to the end of its body; beyond it 408",
    )
    max_connections: int = Field(
        default=0,
        ge=0,
        description="open connections per worker; beyond it a new connection gets an immediate 503 and is closed; "
        "0 = the file descriptor limit less a reserve (10%, at least 64)",
    )
    max_inflight: int = Field(
        default=0,
        ge=0,
        description="classify requests in progress per worker (body received, queued or in the model); beyond "
        "it 429 before the body is read; 0 = MAX_QUEUE + MAX_BATCH_SIZE",
    )
    worker_restarts: int = Field(
        default=5,
        ge=0,
        le=1000,
        description="crashed workers replaced within 60 s (with back-off) before the service gives up and exits",
    )
    max_text_chars: int = Field(default=1000, ge=1)
    max_batch_texts: int = Field(default=64, ge=1)
    max_top_k: int = Field(default=10, ge=1)
    max_body_bytes: int = Field(default=65536, ge=1024)
    cache_size: int = Field(default=0, ge=0, description="LRU prediction cache entries; 0 = off")
    warmup_runs: int = Field(default=3, ge=0)
    api_key: SecretStr | None = Field(default=None, description="when set, Bearer auth on classify/model/admin")
    metrics_require_auth: bool = False
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("api_key")
    @classmethod
    def _empty_key_is_no_key(cls, value: SecretStr | None) -> SecretStr | None:
        # Compose passes `INTENT_API_KEY=` for an unset shell variable: that means "no key", not "the empty key".
        return value if value is not None and value.get_secret_value().strip() else None

    @model_validator(mode="after")
    def _queue_holds_a_batch(self) -> Settings:
        # A full-size batch request must fit in an empty queue, or it could never be accepted.
        if self.max_queue < self.max_batch_texts:
            raise ValueError(
                f"INTENT_MAX_QUEUE ({self.max_queue}) must be >= INTENT_MAX_BATCH_TEXTS ({self.max_batch_texts})"
            )
        return self

    @classmethod
    def unknown_variables(cls, environ: dict[str, str] | None = None) -> list[str]:
        """INTENT_ variables of the environment that name no setting (a typo leaves its setting at the default)."""
        import difflib

        known = {f"INTENT_{name.upper()}" for name in cls.model_fields}
        found = environ if environ is not None else os.environ
        problems = []
        for name in sorted(n for n in found if n.upper().startswith("INTENT_")):
            if name.upper() in known or name.upper() in NOT_SETTINGS:
                continue  # pydantic-settings reads the names in any case
            close = difflib.get_close_matches(name.upper(), sorted(known), n=1)
            problems.append(f"{name}{f' (did you mean {close[0]}?)' if close else ''}")
        return problems

    @property
    def open_key(self) -> str | None:
        """Why the API is open, when INTENT_API_KEY is set but blank (None when it is not set that way)."""
        raw = os.environ.get("INTENT_API_KEY")
        if self.api_key is None and raw is not None:
            return "INTENT_API_KEY is set but blank: it counts as no key"
        return None

    @property
    def threads_per_worker(self) -> int:
        """Model threads for one worker: NUM_THREADS, or the cores split between the workers."""
        if self.num_threads:
            return self.num_threads
        return max(1, (os.cpu_count() or 1) // self.workers)

    @property
    def connection_limit(self) -> int:
        """MAX_CONNECTIONS, or the descriptor limit less a reserve for the model, logs and listening sockets."""
        if self.max_connections:
            return self.max_connections
        try:
            import resource

            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (ImportError, OSError, ValueError):  # no resource module (Windows)
            return 1024
        if soft == resource.RLIM_INFINITY or soft <= 0:
            return 65536
        return max(16, soft - max(64, soft // 10))

    @property
    def inflight_limit(self) -> int:
        """MAX_INFLIGHT, or what the queue plus one model batch can hold."""
        return self.max_inflight or self.max_queue + self.max_batch_size

    @property
    def package_root(self) -> Path:
        """The folder every served package must resolve inside (symlinks followed)."""
        return (self.model_root or Path(self.model_dir).absolute().parent).resolve()


class OtelSettings(BaseSettings):
    """The standard OpenTelemetry variables that decide whether requests are traced (app.tracing).

    Strings, not typed fields: a value the SDK would accept must not stop the service. Read from the process
    environment only (no .env), as the SDK reads the rest of its OTEL_* configuration.
    """

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: str = ""
    traces_exporter: str = ""
    exporter_otlp_endpoint: str = ""
    exporter_otlp_traces_endpoint: str = ""
    exporter_otlp_protocol: str = ""
    exporter_otlp_traces_protocol: str = ""
