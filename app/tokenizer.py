"""Fast WordPiece tokenization with the `tokenizers` library (no transformers)."""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from app.package import PackageError, os_reason

# Characters that end a word for BERT's pre-tokenizer: whitespace and ASCII punctuation.
_EDGE = r"\s!-/:-@\[-`{-~"


def readable_pattern(max_word_chars: int | None) -> re.Pattern[str]:
    """A whole word of ASCII letters and digits, at most `max_word_chars` long (None: any length).

    Every vocabulary served holds all ASCII alphanumerics, alone and as ## pieces, so a text with such a word has a
    known token and needs no tokenizer call ahead of the batch (about 20 us for uncased BERT). WordPiece reads a
    longer word as [UNK] alone, and "transfer\U0001f642" is one word, read as [UNK] too.
    """
    length = "+" if max_word_chars is None else f"{{1,{max_word_chars}}}"
    return re.compile(rf"(?:^|(?<=[{_EDGE}]))[0-9A-Za-z]{length}(?=$|[{_EDGE}])")


class Reading(enum.Enum):
    """What a tokenizer leaves of a text for the model."""

    TOKENS = "tokens"  # at least one token the vocabulary knows
    NOTHING = "nothing"  # no token at all: only characters the normalizer drops
    UNKNOWN = "unknown"  # only the unknown token: a script or symbols the vocabulary lacks


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
        path = package_dir / "tokenizer.json"
        try:
            self.tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust side raises plain Exception for any unreadable or malformed file
            reason = str(exc).split("\n", 1)[0]
            raise PackageError(f"{path} is not a tokenizer the `tokenizers` library can load: {reason}") from exc
        pad_token = self._pad_token(package_dir / "tokenizer_config.json")
        pad_id = self.tokenizer.token_to_id(pad_token)
        if pad_id is None:
            raise PackageError(f"pad token {pad_token!r} is not in {path}")
        # A client's "[SEP]" or "[UNK]" is text, read as its pieces: only the encoder places special tokens.
        self.tokenizer.encode_special_tokens = True
        self.tokenizer.enable_truncation(max_length=max_length)
        self.tokenizer.no_padding()  # we pad ourselves: only to the longest text of each group
        self.pad_id = pad_id
        self.max_length = max_length
        unk_token = getattr(self.tokenizer.model, "unk_token", None)  # WordPiece has one; byte-level BPE none
        self.unk_id = self.tokenizer.token_to_id(unk_token) if isinstance(unk_token, str) else None
        self.readable = readable_pattern(getattr(self.tokenizer.model, "max_input_chars_per_word", None))

    def reading(self, text: str) -> Reading:
        """What the model reads of `text`: some known token, nothing at all, or only unknown tokens."""
        if self.readable.search(text) is not None:  # the common case, in well under a microsecond
            return Reading.TOKENS
        return self.full_reading(text)

    def full_reading(self, text: str) -> Reading:
        """reading() from the tokenizer itself, with no shortcut."""
        ids = self.tokenizer.encode(text, add_special_tokens=False).ids
        if not ids:
            return Reading.NOTHING
        if self.unk_id is not None and all(i == self.unk_id for i in ids):
            return Reading.UNKNOWN
        return Reading.TOKENS

    @staticmethod
    def _pad_token(config_path: Path, default: str = "[PAD]") -> str:
        """The pad token named in tokenizer_config.json, if there is one."""
        if not config_path.is_file():
            return default
        try:
            config = json.loads(config_path.read_bytes().decode("utf-8"))
        except OSError as exc:
            raise PackageError(f"cannot read {config_path}: {os_reason(exc)}") from exc
        except ValueError as exc:  # not UTF-8, not JSON
            raise PackageError(f"{config_path} is not valid JSON: {exc}") from exc
        pad_token = config.get("pad_token") if isinstance(config, dict) else None
        if isinstance(pad_token, dict):  # an AddedToken written out in full
            pad_token = pad_token.get("content")
        if pad_token is not None and not isinstance(pad_token, str):
            raise PackageError(f"{config_path}: pad_token must be a string, not {type(pad_token).__name__}")
        return pad_token or default

    def _pad(self, encodings: list) -> Encoded:
        width = max(len(e.ids) for e in encodings)
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        types = np.zeros((len(encodings), width), dtype=np.int64)
        for row, e in enumerate(encodings):
            n = len(e.ids)
            ids[row, :n] = e.ids
            mask[row, :n] = 1
            types[row, :n] = e.type_ids
        return Encoded(ids, mask, types)

    def __call__(self, texts: list[str]) -> Encoded:
        """Encode a batch of texts, padded to the longest."""
        return self._pad(self.tokenizer.encode_batch(texts))

    def grouped(self, texts: list[str], slack: float = 1.3) -> list[tuple[list[int], Encoded]]:
        """Encode, sort by length and split so that padded tokens stay within `slack` x real tokens.

        Attention cost grows with the padded width of a batch, so one long text would otherwise make
        every short text in its batch pay for its length.
        """
        encodings = self.tokenizer.encode_batch(texts)
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        groups: list[list[int]] = []
        current: list[int] = []
        real = 0
        for i in order:
            n = len(encodings[i].ids)
            if current and n * (len(current) + 1) > slack * (real + n):
                groups.append(current)
                current, real = [], 0
            current.append(i)
            real += n
        if current:
            groups.append(current)
        return [(g, self._pad([encodings[i] for i in g])) for g in groups]
