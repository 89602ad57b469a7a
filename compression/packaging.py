"""Save a PyTorch classifier + tokenizer as a model package (docs/package-format.md)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from app.decision import DEFAULT_OOS_LABEL
from app.package import MANIFEST, Manifest, read_manifest, write_manifest

logger = logging.getLogger(__name__)

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


class OutputDirError(ValueError):
    """A package would be written over a folder that is not a package."""


def check_output_dir(out_dir: Path, *reads: Path | str | None) -> None:
    """Writing a package replaces its folder: refuse a non-package folder, or one overlapping a folder in `reads`."""
    out_dir = Path(out_dir)
    if out_dir.exists():
        if not out_dir.is_dir():
            raise OutputDirError(f"output folder {out_dir} is a file; choose a folder for the package")
        entries = list(out_dir.iterdir())
        folders = sorted(e.name for e in entries if e.is_dir())
        if entries and (folders or not (out_dir / MANIFEST).is_file()):
            what = f"folders ({', '.join(folders[:3])})" if folders else "files and no manifest.json"
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


def refresh_manifest(package_dir: Path) -> Manifest:
    """Re-hash files after a step added or replaced some."""
    manifest = read_manifest(package_dir)
    write_manifest(package_dir, manifest)
    return manifest
