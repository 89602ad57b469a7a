"""Save a PyTorch classifier + tokenizer as a model package (docs/package-format.md)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from app.decision import DEFAULT_OOS_LABEL
from app.package import MANIFEST, Manifest, PackageError, read_manifest, verify_package, write_manifest

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class OutputDirError(ValueError):
    """A package would be written over a folder that is not a package."""


def check_output_dir(out_dir: Path, *reads: Path | str | None) -> None:
    """Writing a package replaces its folder: refuse a non-package folder, or one overlapping a folder in `reads`."""
    out_dir = Path(out_dir)
    for parent in out_dir.parents:  # checked now, not when the trained model is saved
        if parent.exists():
            if not parent.is_dir():
                raise OutputDirError(f"output folder {out_dir} is inside {parent}, which is a file; choose another")
            break
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputDirError(f"output folder {out_dir} is a file; choose a folder for the package")
        entries = list(out_dir.iterdir())
        folders = sorted(e.name for e in entries if e.is_dir())
        what = f"folders ({', '.join(folders[:3])})" if folders else "files and no manifest.json"
        if entries and not folders and (out_dir / MANIFEST).is_file():
            try:
                manifest = read_manifest(out_dir)
            except PackageError as exc:
                what = f"a manifest.json that is not a package's ({exc})"
            else:  # a package, but files it does not list would be lost with it
                strays = sorted(
                    e.name for e in entries if e.name not in {MANIFEST, *manifest.files} and not e.name.startswith(".")
                )
                what = f"files its manifest does not list ({', '.join(strays[:3])})" if strays else ""
        if entries and what:
            raise OutputDirError(
                f"output folder {out_dir} holds {what}: it is not a package, and writing a package replaces its "
                f"folder; choose a new or empty folder (e.g. {out_dir / 'my-package'}) or a package to replace"
            )
    # `reads`: what the command must keep (a teacher, the package being shipped); rebuilding one in place would lose it.
    target = out_dir.resolve()
    for source in (Path(r) for r in reads if r is not None and Path(r).is_dir()):
        src = source.resolve()
        if target == src or target.is_relative_to(src) or src.is_relative_to(target):
            raise OutputDirError(
                f"output folder {out_dir} overlaps {source}, which this command reads and must keep: writing the "
                f"new package would replace it; choose another output folder"
            )


def save_torch_package(
    model: Any,
    tokenizer: Any,
    out_dir: Path,
    *,
    name: str,
    labels: list[str],
    domains: dict[str, list[str]],
    max_length: int,
    source: dict[str, Any],
    oos_threshold: float = 0.0,
    oos_label: str = DEFAULT_OOS_LABEL,
) -> Manifest:
    """Write config, safetensors weights, tokenizer files and manifest into a fresh folder."""
    if oos_label not in labels:  # the service falls back to it: a package without it could never say "out of scope"
        raise ValueError(f"the oos label {oos_label!r} is not one of the model's labels")
    out_dir = Path(out_dir)
    check_output_dir(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    model.to("cpu")  # trained on a GPU or not, the package holds CPU tensors
    model.config.id2label = dict(enumerate(labels))
    model.config.label2id = {label: i for i, label in enumerate(labels)}
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    if not (out_dir / "tokenizer.json").is_file():
        raise RuntimeError("the tokenizer has no fast (tokenizers) version; the service needs tokenizer.json")
    for extra in out_dir.iterdir():
        # Keep the package to the contract; drop e.g. training_args or added_tokens files.
        if extra.name not in {*TOKENIZER_FILES, "config.json", "model.safetensors", MANIFEST}:
            extra.unlink() if extra.is_file() else shutil.rmtree(extra)
    manifest = Manifest(
        name=name,
        labels=labels,
        oos_label=oos_label,
        oos_threshold=oos_threshold,
        max_length=max_length,
        domains=domains,
        source=source,
    )
    write_manifest(out_dir, manifest)
    return manifest


def missing_input(package_dir: Path, name: str, fix: str) -> FileNotFoundError:
    """The error for a file a step reads that the package lacks; `fix` says what to run (the step before)."""
    try:
        source = read_manifest(package_dir).source
    except PackageError:
        source = {}
    if "shipped_from" in source:
        # A slim package keeps one backend's files: the step before would stop at its own missing input in turn.
        return FileNotFoundError(
            f"{package_dir} is a slim package shipped for {source.get('shipped_backend')} from the package "
            f"{source['shipped_from']!r}: it has no {name}; run this step on the full package it was shipped from"
        )
    return FileNotFoundError(f"{Path(package_dir) / name} missing: {fix}")


def check_intact(package_dir: Path) -> Manifest:
    """The manifest, once every file it lists matches its sha256 (PackageError otherwise).

    A step that adds files re-hashes the folder into the manifest: run first, this keeps it from vouching for a
    file damaged since the package was written.
    """
    package_dir = Path(package_dir)
    present = {name for name in read_manifest(package_dir).files if (package_dir / name).is_file()}
    try:  # a missing file is simply not listed again
        manifest = verify_package(package_dir, "", present)
    except PackageError as exc:
        raise PackageError(f"{exc}; this step would record it as valid: rebuild the package (or restore it)") from None
    return manifest


def refresh_manifest(package_dir: Path, replaced_backend: str | None = None) -> Manifest:
    """Re-hash files after a step added or replaced some; drop the test figures of the backend it replaced."""
    manifest = read_manifest(package_dir)
    drop_metrics(manifest, package_dir, replaced_backend)
    write_manifest(package_dir, manifest)
    return manifest


def drop_metrics(manifest: Manifest, package_dir: Path, backend: str | None = None) -> None:
    """Forget test figures that no longer describe the package (one backend's, or all with None), and say so."""
    gone = sorted(manifest.metrics) if backend is None else [b for b in manifest.metrics if b == backend]
    for name in gone:
        del manifest.metrics[name]
    if gone:
        logger.warning(
            "%s: dropped the test metrics of %s, measured before this step; run `python -m compression evaluate "
            "--package %s` for new ones",
            package_dir,
            ", ".join(gone),
            package_dir,
        )
