"""Model package contract: manifest schema, writing, and verification (see DESIGN.md)."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from app.decision import DEFAULT_OOS_LABEL, OosScore, check_threshold

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
BACKEND_FILES: dict[str, str] = {
    "torch": "model.safetensors",
    "torch-int8": "model.safetensors",
    "onnx": "model.onnx",
    "onnx-int8": "model_quantized.onnx",
}
TOKENIZER_FILE = "tokenizer.json"


class PackageError(RuntimeError):
    """A model package is missing, malformed or does not match its manifest."""


class PackagePathError(PackageError):
    """A package path that resolves outside the configured model root."""


class BackendMetrics(BaseModel):
    """Offline evaluation figures of one backend of a package."""

    accuracy: float | None = None
    in_scope_accuracy: float | None = None
    oos_recall: float | None = None
    size_mb: float | None = None
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None


class Manifest(BaseModel):
    """The manifest.json of a model package (schema_version 1)."""

    schema_version: int = SCHEMA_VERSION
    name: str
    labels: list[str] = Field(min_length=2)
    oos_label: str = DEFAULT_OOS_LABEL
    # The threshold's scale is the score's: a probability for "msp", a logit value for the others.
    oos_score: OosScore = "msp"
    oos_threshold: float = Field(default=0.0, allow_inf_nan=False)
    max_length: int = Field(default=64, ge=8, le=512)
    domains: dict[str, list[str]] = Field(default_factory=dict)
    files: dict[str, str] = Field(default_factory=dict)
    backends: list[str] = Field(default_factory=list)
    source: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, BackendMetrics] = Field(default_factory=dict)
    created_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @model_validator(mode="after")
    def _threshold_fits_score(self) -> Manifest:
        check_threshold(self.oos_threshold, self.oos_score)
        return self


def sha256_file(path: Path) -> str:
    """Return the hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(package_dir: Path) -> Manifest:
    """Parse a package's manifest.json with actionable errors."""
    path = Path(package_dir) / MANIFEST
    if not Path(package_dir).is_dir():
        raise PackageError(f"model package directory not found: {package_dir}")
    if not path.is_file():
        raise PackageError(f"{path} is missing; build a package with `python -m compression build`")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from exc
    if data.get("schema_version") != SCHEMA_VERSION:
        raise PackageError(
            f"{path}: schema_version {data.get('schema_version')!r} is not supported (expected {SCHEMA_VERSION})"
        )
    try:
        manifest = Manifest.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        where = f"field {loc!r}" if loc else "fields"  # a cross-field check (e.g. threshold vs score) has no loc
        raise PackageError(f"{path}: {where}: {first['msg']}") from exc
    if manifest.oos_label not in manifest.labels:
        raise PackageError(f"{path}: oos_label {manifest.oos_label!r} is not one of the labels")
    return manifest


def write_manifest(package_dir: Path, manifest: Manifest) -> None:
    """Hash every package file into the manifest, record available backends, and write it."""
    package_dir = Path(package_dir)
    files = {
        p.name: sha256_file(p)
        for p in sorted(package_dir.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    manifest.files = files
    manifest.backends = [b for b, f in BACKEND_FILES.items() if f in files]
    (package_dir / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    logger.info("wrote %s (%d files, backends %s)", package_dir / MANIFEST, len(files), manifest.backends)


def update_manifest(package_dir: Path, **fields: Any) -> Manifest:
    """Read, modify and re-hash a package manifest."""
    manifest = read_manifest(package_dir)
    for key, value in fields.items():
        setattr(manifest, key, value)
    write_manifest(package_dir, manifest)
    return manifest


def verify_package(package_dir: Path, backend: str, required: set[str]) -> Manifest:
    """Check that a package can serve `backend`: `required` files present, every file's sha256 matching."""
    package_dir = Path(package_dir)
    manifest = read_manifest(package_dir)
    if backend in BACKEND_FILES and backend not in manifest.backends:
        raise PackageError(
            f"backend {backend!r} is not in package {package_dir} (it has {manifest.backends}); "
            "run `python -m compression export`/`quantize` or pick another INTENT_BACKEND"
        )
    for name in sorted(required - set(manifest.files)):
        raise PackageError(f"{package_dir / name} is not listed in the manifest's files (unverifiable)")
    for name, expected in sorted(manifest.files.items()):
        path = package_dir / name
        if not path.is_file():
            raise PackageError(f"package file missing: {path}")
        if sha256_file(path) != expected:
            raise PackageError(f"sha256 mismatch for {path}: the file was modified or corrupted")
    return manifest


def resolve_inside(path: Path, root: Path) -> Path:
    """`path` (relative = under `root`) with symlinks resolved; refused unless it stays inside `root`."""
    root = Path(root).resolve()
    try:
        resolved = (root / path).resolve()
    except (OSError, ValueError) as exc:  # e.g. a NUL byte or a symlink loop
        raise PackageError(f"invalid package path {str(path)!r}: {exc}") from exc
    if not resolved.is_relative_to(root):
        raise PackagePathError(f"package path {path} is outside the model root {root} (INTENT_MODEL_ROOT)")
    return resolved


def package_size_mb(package_dir: Path, backend: str) -> float:
    """Size on disk of the weights file a backend loads, in MB (10^6 bytes)."""
    return (Path(package_dir) / BACKEND_FILES[backend]).stat().st_size / 1e6
