"""Ship model weights to and from a remote machine compactly: fp16 tensors, embedding rows only where they changed.

A fine-tuned BERT differs from the model it started from everywhere except in the word-embedding rows of
tokens that never occurred in training (with Adam and no weight decay those rows stay bit-identical). So
`pack` writes every tensor as fp16 except the word embeddings, of which it keeps only the rows that differ
from a reference (or, with no reference, the rows of the given token ids); `unpack` rebuilds full fp32
weights from the pack plus the same reference. Both sides then hold exactly the same model.

    python scripts/remote/weights.py pack MODEL_DIR OUT.safetensors [--reference DIR] [--token-ids FILE]
    python scripts/remote/weights.py unpack PACK.safetensors OUT_DIR --files-from DIR [--reference DIR]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

logger = logging.getLogger("weights")

EMBEDDINGS = "embeddings.word_embeddings.weight"
ROWS, VALUES = "::rows", "::values"


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors of a package or HF model folder."""
    return load_file(str(Path(folder) / "model.safetensors"))


def reference_tensor(reference: dict[str, torch.Tensor], name: str) -> torch.Tensor | None:
    """The reference's tensor of the same name, allowing a bare encoder (no `bert.` prefix) as reference."""
    if name in reference:
        return reference[name]
    bare = name.removeprefix("bert.")
    return reference.get(bare)


def pack(
    weights: dict[str, torch.Tensor],
    reference: dict[str, torch.Tensor] | None = None,
    token_ids: list[int] | None = None,
) -> dict[str, torch.Tensor]:
    """fp16 tensors; word embeddings as changed rows (vs reference) or as the rows of token_ids."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if name.endswith(EMBEDDINGS):
            ref = reference_tensor(reference, name) if reference is not None else None
            if ref is not None and ref.shape == tensor.shape:
                rows = (tensor.float() != ref.float()).any(dim=1).nonzero().flatten()
            elif token_ids is not None:
                rows = torch.tensor(sorted(set(token_ids)), dtype=torch.int64)
            else:
                out[name] = tensor.half().contiguous()
                continue
            out[name + ROWS] = rows.to(torch.int64).contiguous()
            out[name + VALUES] = tensor[rows].half().contiguous()
            out[name + "::shape"] = torch.tensor(list(tensor.shape), dtype=torch.int64)
            logger.info("%s: %d of %d rows", name, len(rows), tensor.shape[0])
        else:
            out[name] = tensor.half().contiguous()
    return out


def unpack(
    packed: dict[str, torch.Tensor], reference: dict[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Full fp32 weights: rows absent from the pack come from the reference (zeros without one)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in packed.items():
        if name.endswith(ROWS) or name.endswith("::shape"):
            continue
        if name.endswith(VALUES):
            base = name.removesuffix(VALUES)
            shape = tuple(packed[base + "::shape"].tolist())
            ref = reference_tensor(reference, base) if reference is not None else None
            full = ref.float().clone() if ref is not None and tuple(ref.shape) == shape else torch.zeros(shape)
            full[packed[base + ROWS]] = tensor.float()
            out[base] = full.contiguous()
        else:
            out[name] = tensor.float().contiguous()
    return out


def unpack_folder(
    pack_file: Path, out_dir: Path, files_from: Path, reference: dict[str, torch.Tensor] | None = None
) -> Path:
    """out_dir as a model folder: the other files of files_from plus the full fp32 weights rebuilt from pack_file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for f in files_from.iterdir():
        if f.is_file() and f.name not in ("model.safetensors", pack_file.name):
            shutil.copy2(f, out_dir / f.name)
    weights = out_dir / "model.safetensors"
    save_file(unpack(load_file(str(pack_file)), reference), str(weights), {"format": "pt"})
    return weights


def main() -> None:
    """CLI: pack or unpack."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("pack")
    a.add_argument("model_dir", type=Path)
    a.add_argument("out", type=Path)
    a.add_argument("--reference", type=Path)
    a.add_argument("--token-ids", type=Path, help="JSON list of token ids whose embedding rows to keep")
    b = sub.add_parser("unpack")
    b.add_argument("pack", type=Path)
    b.add_argument("out_dir", type=Path)
    b.add_argument("--files-from", type=Path, required=True, help="folder whose non-weight files are copied")
    b.add_argument("--reference", type=Path)
    args = p.parse_args()
    if args.cmd == "pack":
        ref = load_weights(args.reference) if args.reference else None
        ids = json.loads(args.token_ids.read_text()) if args.token_ids else None
        save_file(pack(load_weights(args.model_dir), ref, ids), str(args.out))
        logger.info("wrote %s (%.1f MB)", args.out, args.out.stat().st_size / 1e6)
    else:
        ref = load_weights(args.reference) if args.reference else None
        logger.info("wrote %s", unpack_folder(args.pack, args.out_dir, args.files_from, ref))


if __name__ == "__main__":
    main()
