"""Model package contract: manifest schema, writing, and verification (docs/package-format.md)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator

from app.backends.registry import REGISTRY
from app.core.config import error_message
from app.decision import DEFAULT_OOS_LABEL, OosScore, check_threshold

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
# Backend name -> the weights file it loads, for the backends that have one (declared in the registry).
BACKEND_FILES: dict[str, str] = {name: spec.weights[0] for name, spec in REGISTRY.items() if spec.weights}
TOKENIZER_FILE = "tokenizer.json"
# Read when present: verified then, but a package may do without it.
OPTIONAL_FILES = ("tokenizer_config.json",)


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


def os_reason(exc: OSError) -> str:
    """ "permission denied" rather than "[Errno 13] Permission denied: '/long/path'"."""
    return exc.strerror.lower() if exc.strerror else str(exc)


def read_manifest(package_dir: Path) -> Manifest:
    """Parse a package's manifest.json with actionable errors."""
    path = Path(package_dir) / MANIFEST
    if not Path(package_dir).is_dir():
        raise PackageError(f"model package directory not found: {package_dir}")
    if not path.is_file():
        raise PackageError(f"{path} is missing; build a package with `python -m compression build`")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise PackageError(f"cannot read {path}: {os_reason(exc)}") from exc
    except UnicodeDecodeError as exc:
        raise PackageError(f"{path} is not UTF-8 text (byte {exc.start})") from exc
    except json.JSONDecodeError as exc:
        raise PackageError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise PackageError(f"{path} is not a JSON object (found {type(data).__name__})")
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
        raise PackageError(f"{path}: {where}: {error_message(first)}") from exc
    if manifest.oos_label not in manifest.labels:
        raise PackageError(f"{path}: oos_label {manifest.oos_label!r} is not one of the labels")
    return manifest


def readable_by_umask(path: Path) -> None:
    """Give a written file the mode the umask allows (some writers, e.g. safetensors, create files as 0600).

    A package is often built by one user and served by another (a container mounting it read-only).
    """
    umask = os.umask(0)
    os.umask(umask)  # reading the umask means setting it; put it back at once
    mode = 0o666 & ~umask
    if stat.S_IMODE(path.stat().st_mode) != mode:  # unchanged files need no chmod (nor ownership)
        path.chmod(mode)


def write_manifest(package_dir: Path, manifest: Manifest) -> None:
    """Hash every package file into the manifest, record available backends, and write it."""
    package_dir = Path(package_dir)
    files = {
        p.name: sha256_file(p)
        for p in sorted(package_dir.iterdir())
        if p.is_file() and p.name != MANIFEST and not p.name.startswith(".")
    }
    for name in files:
        readable_by_umask(package_dir / name)
    manifest.files = files
    manifest.backends = [b for b, spec in REGISTRY.items() if spec.weights and set(spec.weights) <= set(files)]
    # Written beside it and renamed over it: an interrupted write (a full disk, a kill) leaves the old manifest whole,
    # never a truncated one that would make the package unreadable. A dotfile is not hashed as a package file.
    staging = package_dir / f".{MANIFEST}.tmp"
    try:
        staging.write_text(manifest.model_dump_json(indent=2) + "\n")
        readable_by_umask(staging)
        os.replace(staging, package_dir / MANIFEST)
    finally:
        staging.unlink(missing_ok=True)
    logger.info("wrote %s (%d files, backends %s)", package_dir / MANIFEST, len(files), manifest.backends)


def update_manifest(package_dir: Path, **fields: Any) -> Manifest:
    """Read, modify and re-hash a package manifest."""
    manifest = read_manifest(package_dir)
    for key, value in fields.items():
        setattr(manifest, key, value)
    write_manifest(package_dir, manifest)
    return manifest


def check_file_names(package_dir: Path, manifest: Manifest) -> None:
    """Refuse a manifest naming anything but a file of the package folder itself (no paths, no links out).

    Checked from the names and links alone, never by opening a target: an error must not tell whether a
    file outside the package exists.
    """
    folder = Path(package_dir).resolve()
    for name in sorted(manifest.files):
        if name in {"", ".", "..", MANIFEST} or Path(name).name != name or "\\" in name or "\0" in name:
            raise PackageError(f"{folder / MANIFEST}: files: {name!r} is not a file name of the package folder")
        try:
            inside = (folder / name).resolve().is_relative_to(folder)
        except (OSError, RuntimeError):  # a link loop
            inside = False
        if not inside:
            raise PackageError(f"package file {name!r} is a link that leads outside the package folder {folder}")


def verify_package(package_dir: Path, backend: str, required: set[str] | None = None) -> Manifest:
    """Check that a package can serve `backend`: file names, then the sha256 of the files it reads.

    `required`: the files the backend reads (each must be listed), plus the optional tokenizer config when
    present; None: every file the manifest lists.
    """
    package_dir = Path(package_dir)
    manifest = read_manifest(package_dir)
    check_file_names(package_dir, manifest)
    if backend in BACKEND_FILES and backend not in manifest.backends:
        raise PackageError(
            f"backend {backend!r} is not in package {package_dir} (it has {manifest.backends}); "
            "run `python -m compression export`/`quantize` or pick another INTENT_BACKEND"
        )
    if required is None:
        names = set(manifest.files)
    else:
        # lexists: a link counts as present whatever it points to.
        present = {n for n in OPTIONAL_FILES if n in manifest.files or os.path.lexists(package_dir / n)}
        names = required | present
    for name in sorted(names - set(manifest.files)):
        raise PackageError(f"{package_dir / name} is not listed in the manifest's files (unverifiable)")
    for name in sorted(names):
        path = package_dir / name
        if not path.is_file():
            raise PackageError(f"package file missing: {path}")
        try:
            digest = sha256_file(path)
        except OSError as exc:
            raise PackageError(f"cannot read model file {path}: {os_reason(exc)}") from exc
        if digest != manifest.files[name]:
            raise PackageError(f"sha256 mismatch for {path}: the file was modified or corrupted")
    return manifest


# An absolute POSIX path inside a string: not the "/A" of "N/A", nor the "//host/x" of a URL.
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~-])/[^\s'\",;()\[\]{}]*")


def without_machine_paths(value: Any, root: Path) -> Any:
    """`value` (JSON-like) with each absolute path made relative to `root`, or cut to its last part outside it.

    Manifests record where a package came from (data files, teachers, output folders) as they were given to
    the build, often absolute: the API shows them without telling how this machine's disks are laid out.
    """
    if isinstance(value, dict):
        return {k: without_machine_paths(v, root) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [without_machine_paths(v, root) for v in value]
    if not isinstance(value, str):
        return value

    def relative(match: re.Match[str]) -> str:
        path = PurePosixPath(match.group(0))
        if path.is_relative_to(root):
            return str(path.relative_to(root))
        return path.name or "/"

    return _ABSOLUTE_PATH.sub(relative, value)


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
