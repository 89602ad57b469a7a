"""A weight-free, dependency-free backend for tests: keyword scores over the labels."""

from __future__ import annotations

import threading
import time

import numpy as np

from app.backends.base import Backend
from app.tokenizer import Encoded


class FakeBackend(Backend):
    """Scores label i high when a word of the label's name occurs in the text.

    Tests may slow it (`delay`), hold it (clear `gate`) or make chosen calls raise (`fail_on`); these are
    attributes, not settings, so nothing about them can be configured in production.
    """

    name = "fake"
    precision = "none"
    # Tests hold or slow its calls to stand for a stuck or slow model: that must stop the model thread, not the loop.
    may_run_inline = False

    @classmethod
    def required_files(cls) -> set[str]:
        """Only the manifest."""
        return set()

    @classmethod
    def verified_files(cls) -> None:
        """Every listed file: with no model files of its own, it keeps the package contract testable."""
        return None

    def make_encoder(self) -> None:
        """No tokenizer: texts are kept as-is."""
        return None

    def load(self) -> None:
        """Precompute label keywords."""
        self.keywords = [set(label.lower().split("_")) for label in self.manifest.labels]
        self.calls: list[int] = []  # batch sizes seen, for batching tests
        self.delay = 0.0  # seconds per call
        self.gate = threading.Event()  # cleared = every call waits here until it is set again
        self.gate.set()
        self.fail_on: set[int] = set()  # indexes into `calls` that raise

    def tokenize(self, texts: list[str]) -> Encoded:
        """Carry raw texts in an object array."""
        arr = np.asarray(texts, dtype=object).reshape(-1, 1)
        return Encoded(arr, arr, arr)

    def infer(self, batch: Encoded) -> np.ndarray:
        """Logit 8 per matching keyword, else 0; a text with no match is flat (low confidence)."""
        texts = [str(t).lower() for t in batch.input_ids[:, 0]]
        call = len(self.calls)
        self.calls.append(len(texts))  # recorded on entry, so a test can see a call that is held at the gate
        self.gate.wait()
        if self.delay:
            time.sleep(self.delay)
        if call in self.fail_on:
            raise RuntimeError(f"fake failure on call {call}")
        logits = np.zeros((len(texts), len(self.keywords)), dtype=np.float32)
        for row, text in enumerate(texts):
            words = set(text.replace("?", " ").split())
            for col, keys in enumerate(self.keywords):
                logits[row, col] = 8.0 * len(words & keys)
        return logits
