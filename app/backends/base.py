"""Backend ABC: tokenize -> infer -> postprocess, with a registry of named backends."""

from __future__ import annotations

import importlib
import logging
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import numpy as np

from app.backends.registry import REGISTRY, BackendSpec
from app.decision import softmax
from app.package import TOKENIZER_FILE, Manifest, PackageError, verify_package
from app.tokenizer import Encoded, TextEncoder
from app.tracing import BatchTiming

logger = logging.getLogger(__name__)


class Backend(ABC):
    """One way of running a package's model; subclasses implement `infer`."""

    name: ClassVar[str]
    precision: ClassVar[str] = "fp32"
    # Whether a fast one-text call may run on the event loop (app.batcher.MicroBatcher.runs_inline).
    may_run_inline: ClassVar[bool] = True

    def __init__(self, package_dir: Path, manifest: Manifest, num_threads: int = 0, exact_int8: bool = True) -> None:
        self.package_dir = Path(package_dir)
        self.manifest = manifest
        self.num_threads = num_threads
        self.exact_int8 = exact_int8
        self.encoder = self.make_encoder()
        self.load()
        self.check_output_size()

    @classmethod
    def spec(cls) -> BackendSpec:
        """The backend's declaration in the registry: weights file(s) and install extra."""
        return REGISTRY[cls.name]

    @classmethod
    def required_files(cls) -> set[str]:
        """Files of the package this backend reads."""
        return {*cls.spec().weights, TOKENIZER_FILE}

    @classmethod
    def verified_files(cls) -> set[str] | None:
        """Files whose sha256 is checked before loading (None: every listed file); files never read need none."""
        return cls.required_files()

    def make_encoder(self) -> TextEncoder | None:
        """The tokenizer from the package's tokenizer.json."""
        return TextEncoder(self.package_dir, self.manifest.max_length)

    @abstractmethod
    def load(self) -> None:
        """Load weights; called once from __init__."""

    @abstractmethod
    def infer(self, batch: Encoded) -> np.ndarray:
        """Logits of shape (batch, num_labels), float32."""

    def normalize(self, text: str) -> str:
        """The tokenizer's own normalization (e.g. lowercasing and accent stripping for uncased BERT)."""
        normalizer = self.encoder.tokenizer.normalizer if self.encoder is not None else None
        return normalizer.normalize_str(text) if normalizer is not None else text

    def tokenize(self, texts: list[str]) -> Encoded:
        """Texts -> padded batch."""
        assert self.encoder is not None
        return self.encoder(texts)

    def postprocess(self, logits: np.ndarray) -> np.ndarray:
        """Logits -> probabilities."""
        return softmax(logits)

    def predict_logits(self, texts: list[str], timing: BatchTiming | None = None) -> np.ndarray:
        """Logits for a batch of texts, shape (len(texts), num_labels), texts of similar length grouped.

        `timing` (traced requests only) gets the moment tokenization ends and inference begins.
        """
        if self.encoder is None or len(texts) < 4:
            batch = self.tokenize(texts)
            if timing is not None:
                timing.tokenized_ns = time.time_ns()
            return self.infer(batch)
        out = np.empty((len(texts), len(self.manifest.labels)), dtype=np.float32)
        groups = self.encoder.grouped(texts)  # tokenizes every text up front
        if timing is not None:
            timing.tokenized_ns = time.time_ns()
        for rows, batch in groups:
            out[rows] = self.infer(batch)
        return out

    def predict(self, texts: list[str]) -> np.ndarray:
        """Probabilities for a batch of texts (the oos decision needs `predict_logits`)."""
        return self.postprocess(self.predict_logits(texts))

    def check_output_size(self) -> None:
        """Refuse a model whose logits do not match the manifest's labels."""
        n = self.infer(self.tokenize(["hello"])).shape[-1]
        if n != len(self.manifest.labels):
            raise PackageError(f"model outputs {n} logits but the manifest lists {len(self.manifest.labels)} labels")

    def warmup(self, runs: int) -> None:
        """Run a few batches so first requests do not pay one-off allocation costs."""
        for i in range(runs):
            self.predict(["warm up the model"] * (1 + 7 * (i % 2)))


def backend_class(name: str) -> type[Backend]:
    """Resolve a backend name to its class, with a clear error for unknown names or a missing extra."""
    if name not in REGISTRY:
        raise PackageError(f"unknown backend {name!r}; choose one of {sorted(REGISTRY)}")
    spec = REGISTRY[name]
    module_name, cls_name = spec.target.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PackageError(
            f"backend {name!r} needs a missing dependency ({exc.name}); install it with `{spec.install_hint}`"
        ) from exc
    return getattr(module, cls_name)


def verify_for(name: str, package_dir: Path) -> tuple[type[Backend], Manifest]:
    """The backend class for `name` and the package's manifest, verified for it (files, sha256); PackageError."""
    cls = backend_class(name)
    return cls, verify_package(Path(package_dir), name, cls.verified_files())


def load_backend(name: str, package_dir: Path, num_threads: int = 0, exact_int8: bool = True) -> Backend:
    """Verify the package for `name` and load it."""
    cls, manifest = verify_for(name, package_dir)
    return cls(package_dir, manifest, num_threads, exact_int8)
