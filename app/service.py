"""The classifier runtime: backend + batcher + out-of-scope decision + fallback message."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from app.backends.base import Backend, load_backend, verify_for
from app.batcher import MicroBatcher
from app.cache import PredictionCache
from app.core.config import Settings
from app.decision import OOS_REASONS, check_threshold, decide, softmax
from app.metrics import Metrics
from app.package import Manifest, PackageError, resolve_inside
from app.tokenizer import Reading
from app.tracing import BatchTiming

logger = logging.getLogger(__name__)

REASONS = {0: None, **dict(enumerate(OOS_REASONS, 1))}
UNKNOWN_WORDS = OOS_REASONS.index("unknown_words") + 1


@dataclass(frozen=True, slots=True)
class Decided:
    """One text's outcome: made for a whole batch at once, with the model call, so the event loop only reads it."""

    label: int  # index of the answered label (the oos label when out of scope)
    reason: int  # 0 in scope, 1 arg-max is the oos label, 2 oos score under the threshold, 3 unknown words
    confidence: float  # probability of the model's arg-max label
    ranked: list[tuple[int, float]]  # the most probable labels with their probabilities, best first


def fallback_message(domains: list[str]) -> str:
    """What the assistant tells a user whose request is out of scope."""
    if not domains:
        return "Sorry, I can't help with that."
    names = [d.replace("_", " ") for d in domains]
    listed = ", ".join(names[:-1]) + f" and {names[-1]}" if len(names) > 1 else names[0]
    return f"Sorry, I can't help with that. I can help with {listed}."


class IntentClassifier:
    """Turns probabilities into API answers; owns the micro-batcher."""

    def __init__(self, backend: Backend, settings: Settings, metrics: Metrics) -> None:
        self.backend = backend
        self.manifest = backend.manifest
        self.metrics = metrics
        self.labels = list(self.manifest.labels)
        self.oos_index = self.manifest.labels.index(self.manifest.oos_label)
        self.oos_score = self.manifest.oos_score
        self.threshold = self.threshold_for(settings, self.manifest)
        self.domains = sorted(self.manifest.domains)
        self.fallback = {"message": fallback_message(self.domains), "domains": self.domains}
        self.ranked = min(settings.max_top_k + 1, len(self.labels))  # enough for any top_k the API accepts
        self.cache = PredictionCache(settings.cache_size, backend.normalize) if settings.cache_size else None
        self.batcher = MicroBatcher(
            self._predict,
            settings.max_batch_size,
            settings.max_wait_ms,
            on_batch=self._observe_batch,
            max_queue=settings.max_queue,
            inline_max_ms=settings.inline_max_ms if backend.may_run_inline else 0.0,
        )

    @staticmethod
    def package_dir(settings: Settings, model_dir: Path | None = None) -> Path:
        """The package folder, resolved inside the model root (PackagePathError outside it)."""
        # INTENT_MODEL_DIR is relative to the working directory; a reload's model_dir to the model root.
        requested = model_dir if model_dir is not None else Path(settings.model_dir).absolute()
        return resolve_inside(requested, settings.package_root)

    @staticmethod
    def threshold_for(settings: Settings, manifest: Manifest) -> float:
        """The package's calibrated threshold, or INTENT_OOS_THRESHOLD if it fits the package's score."""
        if settings.oos_threshold is None:
            return manifest.oos_threshold
        try:
            check_threshold(settings.oos_threshold, manifest.oos_score)
        except ValueError as exc:
            raise PackageError(f"INTENT_OOS_THRESHOLD does not fit package {manifest.name!r}: {exc}") from None
        return settings.oos_threshold

    @classmethod
    def check(cls, settings: Settings) -> None:
        """Everything load() checks short of loading the model: root, files, sha256, backend (PackageError)."""
        _, manifest = verify_for(settings.backend, cls.package_dir(settings))
        cls.threshold_for(settings, manifest)

    @classmethod
    def load(cls, settings: Settings, metrics: Metrics, model_dir: Path | None = None) -> IntentClassifier:
        """Verify + load a package (default: the configured one) inside the model root, then warm it up."""
        package = cls.package_dir(settings, model_dir)
        backend = load_backend(settings.backend, package, settings.threads_per_worker, settings.exact_int8)
        classifier = cls(backend, settings, metrics)  # refuses a bad threshold override before warm-up and the log
        backend.warmup(settings.warmup_runs)
        logger.info("loaded package %r (%s) with backend %s", backend.manifest.name, package, settings.backend)
        return classifier

    def set_info(self, value: float) -> None:
        """Set this runtime's intent_model_info sample (1 while serving, removed after)."""
        labels = {"model": self.manifest.name, "backend": self.backend.name, "precision": self.backend.precision}
        if value:
            self.metrics.model_info.labels(**labels).set(value)
        else:
            with contextlib.suppress(KeyError):
                self.metrics.model_info.remove(*labels.values())

    def _predict(self, texts: list[str], timing: BatchTiming | None = None) -> list[Decided]:
        return self.decide_rows(self.backend.predict_logits(texts, timing))

    def decide_rows(self, logits: np.ndarray) -> list[Decided]:
        """Arg-max label unless it is `oos` or its oos score is under the threshold; one numpy pass per batch."""
        probs = softmax(logits)
        predicted, reason = decide(logits, self.oos_index, self.threshold, self.oos_score, probs)
        order = np.argsort(-probs, axis=-1, kind="stable")[:, : self.ranked]
        top = np.take_along_axis(probs, order, axis=-1)
        return [
            Decided(label, why, ranked_probs[0], list(zip(ranked, ranked_probs, strict=True)))
            for label, why, ranked, ranked_probs in zip(
                predicted.tolist(), reason.tolist(), order.tolist(), top.tolist(), strict=True
            )
        ]

    def _observe_batch(self, size: int, seconds: float, waits: list[float], inline: bool) -> None:
        self.metrics.batch_size.observe(size)
        if inline:
            self.metrics.inline_batches.inc()
        self.metrics.child(self.metrics.inference_duration, self.backend.name).observe(seconds)
        for wait in waits:
            self.metrics.queue_wait.observe(wait)

    def decide(self, logits: np.ndarray, top_k: int) -> dict[str, Any]:
        """The API answer for one row of logits."""
        return self.answer(self.decide_rows(logits[None, :])[0], top_k)

    def answer(self, decided: Decided, top_k: int) -> dict[str, Any]:
        """The API answer for one decided text; counts it in the metrics."""
        intent = self.labels[decided.label]
        why = REASONS[decided.reason]
        alternatives = [
            {"intent": self.labels[i], "confidence": p} for i, p in decided.ranked[: top_k + 1] if i != decided.label
        ][:top_k]
        self.metrics.child(self.metrics.predictions, intent).inc()
        if why:
            self.metrics.child(self.metrics.oos, why).inc()
        return {
            "intent": intent,
            "confidence": decided.confidence,
            "oos": why is not None,
            "fallback": self.fallback if why else None,
            "alternatives": alternatives,
            "model": self.manifest.name,
            "backend": self.backend.name,
        }

    def reading(self, text: str) -> Reading:
        """What the model would read of `text` (app.tokenizer.Reading); TOKENS without a tokenizer."""
        encoder = self.backend.encoder
        return Reading.TOKENS if encoder is None else encoder.reading(text)

    def unknown_words(self, decided: Decided) -> Decided:
        """The answer for a text the model read only as unknown tokens: out of scope, whatever the model said."""
        return Decided(self.oos_index, UNKNOWN_WORDS, decided.confidence, decided.ranked)

    def submit(self, texts: list[str]) -> list[asyncio.Future[Decided]]:
        """Queue the texts the cache (if on) cannot answer; QueueFullError/InferenceError leave nothing queued."""
        if self.cache is None:
            return self.batcher.enqueue(texts)
        keys = [self.cache.key(t) for t in texts]
        cached = [self.cache.get(k) if k is not None else None for k in keys]
        misses = [i for i, row in enumerate(cached) if row is None]
        queued = iter(self.batcher.enqueue([texts[i] for i in misses]))
        loop = asyncio.get_running_loop()
        futures = []
        for key, row in zip(keys, cached, strict=True):
            self.metrics.child(self.metrics.cache, "hit" if row is not None else "miss").inc()
            if row is None:
                future = next(queued)
                if key is not None:
                    future.add_done_callback(lambda f, key=key: self._remember(key, f))
            else:
                future = loop.create_future()
                future.set_result(row)
            futures.append(future)
        return futures

    def _remember(self, key: str, future: asyncio.Future[Decided]) -> None:
        if self.cache is not None and not future.cancelled() and future.exception() is None:
            self.cache.put(key, future.result())

    def answers(self, rows: list[Decided], top_k: int) -> list[dict[str, Any]]:
        """API answers for decided texts."""
        return [self.answer(row, top_k) for row in rows]
