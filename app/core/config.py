"""Service settings: the only place that reads the environment (prefix INTENT_)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """All runtime configuration; each field is INTENT_<NAME> in the environment."""

    model_config = SettingsConfigDict(env_prefix="INTENT_", env_file=".env", extra="ignore")

    model_dir: Path = Path("artifacts/teacher")
    backend: str = "onnx-int8"
    oos_threshold: float | None = Field(default=None, ge=0.0, le=1.0)
    num_threads: int = Field(default=0, ge=0, description="0 = all cores")
    max_batch_size: int = Field(default=32, ge=1, le=1024)
    max_wait_ms: float = Field(default=2.0, ge=0.0, le=1000.0)
    max_text_chars: int = Field(default=1000, ge=1)
    max_batch_texts: int = Field(default=64, ge=1)
    max_top_k: int = Field(default=10, ge=1)
    max_body_bytes: int = Field(default=65536, ge=1024)
    cache_size: int = Field(default=0, ge=0, description="LRU prediction cache entries; 0 = off")
    warmup_runs: int = Field(default=3, ge=0)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    log_level: str = "info"
