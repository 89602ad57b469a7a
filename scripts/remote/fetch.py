"""Rebuild full model packages from the chunks scripts/remote/train.py shipped back.

    python scripts/remote/fetch.py FILES_DIR [--artifacts artifacts] [--base BASE_MODEL_DIR]

Each shipped package is rebuilt against its reference: the teacher against the base encoder, the
students against the teacher, pruned packages against the student (as train.py packed them). The
manifest is rewritten (fresh sha256 of every file); then finish each package here (export, quantize,
calibrate, evaluate), with `python -m compression finish --package artifacts/NAME`.
"""

from __future__ import annotations

import argparse
import io
import logging
import shutil
import sys
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import weights  # noqa: E402

logger = logging.getLogger("fetch")
REFERENCES = {"teacher": "base", "student": "teacher", "pruned": "student"}  # shipped group -> reference package


def extract(files: Path, group: str, into: Path) -> Path | None:
    """Join GROUP.tgz.NN chunks and extract them; returns the group folder or None if absent."""
    chunks = sorted(files.glob(f"{group}.tgz.*"))
    if not chunks:
        return None
    data = b"".join(c.read_bytes() for c in chunks)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(into, filter="data")
    return into / group


def main(argv: list[str] | None = None) -> None:
    """Rebuild every shipped package under --artifacts."""
    from app.package import read_manifest, write_manifest
    from compression.config import default_base_model

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", type=Path, nargs="+", help="folders holding *.tgz.NN chunks")
    p.add_argument("--artifacts", type=Path, default=REPO / "artifacts")
    p.add_argument("--base", type=Path, default=None, help="base encoder folder (default: the packaged MiniLM)")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "fetched")
    args = p.parse_args(argv)
    base = args.base or Path(default_base_model())
    shutil.rmtree(args.work, ignore_errors=True)
    for group, ref_name in REFERENCES.items():
        folder = next((f for f in (extract(d, group, args.work) for d in args.files) if f is not None), None)
        if folder is None:
            continue
        reference_dir = base if ref_name == "base" else args.artifacts / ref_name
        reference = weights.load_weights(reference_dir)
        for pack in sorted(folder.glob("*/model.pack.safetensors")):
            dest = args.artifacts / pack.parent.name
            shutil.rmtree(dest, ignore_errors=True)
            weights.unpack_folder(pack, dest, pack.parent, reference)
            write_manifest(dest, read_manifest(dest))  # fresh hashes, backends from the files present
            logger.info("rebuilt %s (reference %s)", dest, reference_dir)
        for extra in folder.iterdir():
            if extra.is_file():
                shutil.copy2(extra, args.work / f"{group}-{extra.name}")


if __name__ == "__main__":
    main()
