"""An LRU cache of logit rows keyed by the model's own text normalization."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np


class PredictionCache:
    """Bounded LRU; used only from the event loop, so it needs no lock."""

    def __init__(self, size: int, normalize: Callable[[str], str]) -> None:
        self.size = size
        self.normalize = normalize
        self.rows: OrderedDict[str, np.ndarray] = OrderedDict()

    def key(self, text: str) -> str | None:
        """Texts the tokenizer cannot tell apart share a key (case, accents, spacing for uncased BERT).

        None for a text the tokenizer cannot normalize: it is not cached, and the model alone decides its fate,
        so the cache never turns a text into an error of its own.
        """
        try:
            return self.normalize(" ".join(text.split()))
        except Exception:
            return None

    def get(self, key: str) -> np.ndarray | None:
        """The cached row, refreshed as most recent, or None."""
        row = self.rows.get(key)
        if row is not None:
            self.rows.move_to_end(key)
        return row

    def put(self, key: str, row: np.ndarray) -> None:
        """Insert, evicting the least recently used entry when full."""
        self.rows[key] = row
        self.rows.move_to_end(key)
        while len(self.rows) > self.size:
            self.rows.popitem(last=False)
