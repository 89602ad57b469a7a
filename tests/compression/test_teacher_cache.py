"""The teacher-logits cache: what its key depends on, hits, misses and damaged entries."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import torch

from compression.teacher_cache import cache_key, cached_logits

TEXTS = ["book a flight to paris", "what is my balance", "play some jazz"]


def test_key_follows_the_teacher_files_texts_and_length_not_the_path(
    tiny_package: Path, package_copy: Path, tmp_path: Path
) -> None:
    key = cache_key([tiny_package], TEXTS, 32)
    assert cache_key([package_copy], TEXTS, 32) == key  # the same bytes elsewhere: the same logits
    assert cache_key([tiny_package], TEXTS, 16) != key
    assert cache_key([tiny_package], TEXTS[::-1], 32) != key  # rows are positional
    assert cache_key([tiny_package], [*TEXTS[:2], TEXTS[2] + " "], 32) != key
    assert cache_key([tiny_package], ["a", "b"], 32) != cache_key([tiny_package], ["a\0b"], 32)
    assert cache_key([tiny_package, package_copy], TEXTS, 32) != key  # an ensemble's mean is another target
    weights = package_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight
    weights.write_bytes(bytes(data))
    assert cache_key([package_copy], TEXTS, 32) != key
    shutil.copy2(tiny_package / "model.safetensors", weights)
    config = package_copy / "config.json"
    config.write_text(config.read_text().replace('"num_attention_heads"', ' "num_attention_heads"'))
    assert cache_key([package_copy], TEXTS, 32) != key  # the config holds the label order
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        cache_key([tmp_path], TEXTS, 32)


def test_hit_miss_and_damaged_entries(tiny_package: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cache = tmp_path / "cache"
    calls: list[int] = []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.randn(len(TEXTS), 5)

    first, hit = cached_logits(cache, [tiny_package], TEXTS, 32, compute)
    assert (hit, len(calls)) == (False, 1)
    assert [p.suffix for p in cache.iterdir()] == [".safetensors"]  # no temporary file left behind
    again, hit = cached_logits(cache, [tiny_package], TEXTS, 32, compute)
    assert (hit, len(calls)) == (True, 1)
    assert torch.equal(again, first)  # bit for bit: fp32 in, fp32 out
    _, hit = cached_logits(cache, [tiny_package], TEXTS[:2], 32, compute)
    assert (hit, len(calls)) == (False, 2)

    entry = cache / f"{cache_key([tiny_package], TEXTS, 32)}.safetensors"
    entry.write_bytes(entry.read_bytes()[:40])  # a truncated file, e.g. a full disk
    with caplog.at_level(logging.WARNING, logger="compression.teacher_cache"):
        fresh, hit = cached_logits(cache, [tiny_package], TEXTS, 32, compute)
    assert (hit, len(calls)) == (False, 3)
    assert "unreadable" in caplog.text
    reread, hit = cached_logits(cache, [tiny_package], TEXTS, 32, compute)
    assert hit  # the damaged entry was replaced
    assert torch.equal(reread, fresh)


def test_an_entry_with_other_rows_is_recomputed(tiny_package: Path, tmp_path: Path) -> None:
    from safetensors.torch import save_file

    cache = tmp_path / "cache"
    entry = cache / f"{cache_key([tiny_package], TEXTS, 32)}.safetensors"
    cache.mkdir()
    save_file({"logits": torch.zeros(1, 5)}, entry)  # e.g. written by a version that keyed less carefully
    logits, hit = cached_logits(cache, [tiny_package], TEXTS, 32, lambda: torch.ones(len(TEXTS), 5))
    assert not hit
    assert logits.shape == (3, 5)


def test_a_folder_that_cannot_be_written_costs_the_cache_not_the_run(tiny_package: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")  # mkdir under a file fails for root too, unlike permission bits
    logits, hit = cached_logits(blocked / "cache", [tiny_package], TEXTS, 32, lambda: torch.ones(len(TEXTS), 5))
    assert not hit
    assert torch.equal(logits, torch.ones(len(TEXTS), 5))
