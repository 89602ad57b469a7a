"""What pruning saves: nonzero counts of the pruned scope, CSR bytes and gzip sizes of the weights files."""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import torch

from app.package import read_manifest, update_manifest
from compression.prune.masks import ENCODER_LINEAR

WEIGHT_FILES = ("model.safetensors", "model.onnx", "model_quantized.onnx")
GZIP_LEVEL = 6  # gzip's default level: what `gzip FILE` gives


def _numel(value: Any) -> int:
    """Element count of a torch tensor or a numpy array."""
    return int(value.numel()) if isinstance(value, torch.Tensor) else int(value.size)


def _nbytes(value: Any) -> int:
    """Bytes of a torch tensor or a numpy array."""
    return _numel(value) * value.element_size() if isinstance(value, torch.Tensor) else int(value.nbytes)


def _is_encoder_linear_weight(key: str) -> bool:
    """Whether a state-dict key is the weight of one of the pruned encoder Linear layers."""
    return key.endswith(".weight") and bool(ENCODER_LINEAR.search(key.removesuffix(".weight")))


def weight_stats(state: dict[str, Any]) -> dict[str, Any]:
    """Counts of a state dict (torch or numpy arrays): encoder Linear weights (the pruned scope) and all tensors."""
    enc = enc_nonzero = total = total_nonzero = 0
    for key, value in state.items():
        n, nz = _numel(value), int((value != 0).sum())
        total += n
        total_nonzero += nz
        if _is_encoder_linear_weight(key):
            enc += n
            enc_nonzero += nz
    return {
        "encoder_linear_params": enc,
        "encoder_linear_nonzero": enc_nonzero,
        "sparsity": 1.0 - enc_nonzero / enc if enc else 0.0,
        "total_params": total,
        "total_nonzero": total_nonzero,
    }


def package_weight_stats(package_dir: Path) -> dict[str, Any]:
    """weight_stats of a package's model.safetensors (sparsity = zero share of its encoder Linear weights)."""
    from safetensors.numpy import load_file

    return weight_stats(load_file(str(Path(package_dir) / "model.safetensors")))


def csr_bytes(state: dict[str, Any]) -> int:
    """Bytes if encoder Linear weights were stored as CSR (fp32 values, int32 column indices and row pointers)."""
    size = 0
    for key, value in state.items():
        if _is_encoder_linear_weight(key):
            size += int((value != 0).sum()) * (4 + 4) + (value.shape[0] + 1) * 4
        else:
            size += _nbytes(value)
    return size


def gzip_size(path: Path, level: int = GZIP_LEVEL) -> int:
    """Size in bytes of the file compressed as gzip at `level` (streamed, nothing written)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 31)  # wbits 31 = gzip container
    size = 0
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            size += len(compressor.compress(block))
    return size + len(compressor.flush())


def compressed_sizes(package_dir: Path) -> dict[str, dict[str, int]]:
    """{file: {bytes, gzip_bytes}} for each weights file present in the package."""
    out = {}
    for name in WEIGHT_FILES:
        path = Path(package_dir) / name
        if path.is_file():
            out[name] = {"bytes": path.stat().st_size, "gzip_bytes": gzip_size(path)}
    return out


def record_compressed_sizes(package_dir: Path) -> dict[str, dict[str, int]]:
    """Store compressed_sizes in the manifest's source.pruning (after export/quantize added the ONNX files)."""
    manifest = read_manifest(package_dir)
    sizes = compressed_sizes(package_dir)
    source = dict(manifest.source)
    source.setdefault("pruning", {})["compressed"] = sizes
    update_manifest(package_dir, source=source)
    return sizes
