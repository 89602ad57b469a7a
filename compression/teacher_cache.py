"""A folder of teacher logits, computed once per teacher and transfer set and reused by every run that shares them.

A seed study trains one KD student per seed from the same teacher and the same train split: without a cache each
run repeats the same teacher pass (about 2 minutes at 1 CPU thread on CLINC150's 15,250 queries). Entries are keyed
by what determines the logits, not by paths: the bytes of each teacher's weights, config and tokenizer files (the
config holds the label order, so the column order), the max length and the texts in order. Files are safetensors
(no pickle is ever loaded from a shared folder) and are written atomically, so runs started side by side may both
compute an entry but never read a half-written one.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.package import sha256_file

logger = logging.getLogger(__name__)

# Bump when the teacher pass changes what it returns for the same inputs: old entries then miss.
CACHE_VERSION = 1
KEYED_FILES = ("model.safetensors", "config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json")


def cache_key(teacher_dirs: Sequence[Path], texts: Sequence[str], max_length: int) -> str:
    """The entry's name: a digest of the teachers' files (in order), the max length and the texts."""
    digest = hashlib.sha256(f"teacher-logits v{CACHE_VERSION} max_length={max_length}\n".encode())
    for teacher in teacher_dirs:
        if not (Path(teacher) / "model.safetensors").is_file():
            raise FileNotFoundError(f"no model.safetensors in {teacher}: the logits cache keys on the teacher weights")
        for name in KEYED_FILES:
            path = Path(teacher) / name
            digest.update(f"{name}={sha256_file(path) if path.is_file() else '-'}\n".encode())
    digest.update(f"{len(texts)} texts\n".encode())
    for text in texts:
        digest.update(text.encode("utf-8") + b"\0")  # \0 cannot occur in a query: no two text lists collide
    return digest.hexdigest()


def cached_logits(
    cache_dir: Path, teacher_dirs: Sequence[Path], texts: Sequence[str], max_length: int, compute: Callable[[], Any]
) -> tuple[Any, bool]:
    """The logits for `texts` from the cache, or compute() them and store them; also whether the cache had them."""
    from safetensors.torch import load_file, save_file

    cache_dir = Path(cache_dir)
    path = cache_dir / f"{cache_key(teacher_dirs, texts, max_length)}.safetensors"
    if path.is_file():
        try:
            logits = load_file(path)["logits"]
            if logits.shape[0] == len(texts):
                logger.info("teacher logits from the cache: %s", path)
                return logits, True
            logger.warning("ignoring %s: %d rows for %d texts; recomputing", path, logits.shape[0], len(texts))
        except Exception as exc:  # a damaged entry must cost a recomputation, never the run
            logger.warning("ignoring unreadable cache entry %s (%s); recomputing", path, exc)
    logits = compute()
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_file({"logits": logits.contiguous()}, tmp)
        os.replace(tmp, path)  # atomic: a run reading side by side sees the old state or the whole new file
        logger.info("teacher logits cached: %s", path)
    except OSError as exc:  # a full disk or a read-only folder costs the next run a pass, not this run
        with contextlib.suppress(OSError):  # there may be no file, or not even a folder, to remove
            tmp.unlink()
        logger.warning("could not cache the teacher logits in %s (%s); continuing without", cache_dir, exc)
    return logits, False
