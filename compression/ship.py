"""Ship a package for one backend: only the files that backend reads, re-hashed under a new manifest."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from app.backends.registry import REGISTRY
from app.package import (
    OPTIONAL_FILES,
    TOKENIZER_FILE,
    read_manifest,
    verify_package,
    without_machine_paths,
    write_manifest,
)
from compression.packaging import check_output_dir

logger = logging.getLogger(__name__)

# Read by no backend, but they say what the model is (labels, architecture) to whoever opens the folder.
DESCRIPTIVE_FILES = ("config.json",)


@dataclass
class ShipConfig:
    """Which package, which backend, and where the slim copy goes."""

    package_dir: Path
    output_dir: Path
    backend: str = "onnx-int8"
    name: str | None = None  # default: the package's own name


def ship(cfg: ShipConfig) -> Path:
    """Copy the backend's files of a verified package into output_dir with a manifest of just those."""
    if cfg.backend not in REGISTRY or not REGISTRY[cfg.backend].weights:
        raise ValueError(f"unknown backend {cfg.backend!r}; choose one of {sorted(REGISTRY)}")
    manifest = verify_package(cfg.package_dir, cfg.backend)  # never ship a package that fails its own hashes
    wanted = [*REGISTRY[cfg.backend].weights, TOKENIZER_FILE, *OPTIONAL_FILES, *DESCRIPTIVE_FILES]
    out = Path(cfg.output_dir)
    check_output_dir(out, cfg.package_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and swapped in whole: a failed copy (a full disk) leaves the old package as it was.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for name in wanted:
            if (Path(cfg.package_dir) / name).is_file():
                shutil.copyfile(Path(cfg.package_dir) / name, staging / name)
        manifest.metrics = {cfg.backend: manifest.metrics[cfg.backend]} if cfg.backend in manifest.metrics else {}
        # A shipped package travels: its provenance keeps no absolute paths of the machine that built it.
        source = without_machine_paths(manifest.source, Path.cwd())
        manifest.source = {**source, "shipped_from": manifest.name, "shipped_backend": cfg.backend}
        manifest.name = cfg.name or manifest.name
        write_manifest(staging, manifest)
        read_manifest(staging)  # the slim package parses as any other
        staging.chmod(0o755)  # mkdtemp makes it private; a package is read by the service's user
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            if old.exists():  # left by an interrupted ship
                shutil.rmtree(old)
            out.rename(old)
            staging.rename(out)
            shutil.rmtree(old)
        else:
            staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    logger.info("shipped %s (%s) to %s", cfg.package_dir, cfg.backend, out)
    return out
