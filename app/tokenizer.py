"""Fast WordPiece tokenization with the `tokenizers` library (no transformers)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


@dataclass
class Encoded:
    """A padded batch: int64 arrays of shape (batch, longest text in the batch)."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


class TextEncoder:
    """tokenizer.json -> truncated, padded-to-longest int64 batches."""

    def __init__(self, package_dir: Path, max_length: int) -> None:
        package_dir = Path(package_dir)
        self.tokenizer = Tokenizer.from_file(str(package_dir / "tokenizer.json"))
        pad_token = "[PAD]"
        config_path = package_dir / "tokenizer_config.json"
        if config_path.is_file():
            pad_token = json.loads(config_path.read_text()).get("pad_token", pad_token) or pad_token
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise ValueError(f"pad token {pad_token!r} is not in {package_dir}/tokenizer.json")
        self.tokenizer.enable_truncation(max_length=max_length)
        # No fixed length: pad only to the longest text of each batch.
        self.tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> Encoded:
        """Encode a batch of texts."""
        encodings = self.tokenizer.encode_batch(texts)
        return Encoded(
            input_ids=np.asarray([e.ids for e in encodings], dtype=np.int64),
            attention_mask=np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
            token_type_ids=np.asarray([e.type_ids for e in encodings], dtype=np.int64),
        )
