"""Prometheus metrics (names and labels: docs/api.md, "Metrics"), one registry per app."""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector

from app.decision import OOS_REASONS
from app.guard import REFUSAL_REASONS

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own variable, set by app.server for N workers

# 0.5 ms .. 2 s, roughly x2 per step: resolves both int8 single queries and overload tails.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.128, 0.256, 0.512, 1.0, 2.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """All service metrics on a private registry (tests build many apps in one process)."""

    def __init__(self, multiprocess_dir: str | None = None) -> None:
        # With several worker processes each one writes its values to files in multiprocess_dir, and /metrics
        # (served by any worker) sums them: a scrape sees the whole server, not one worker.
        self.multiprocess_dir = multiprocess_dir
        if multiprocess_dir is not None:
            os.environ[MULTIPROC_ENV] = multiprocess_dir  # read by MultiProcessValue when each metric is created
            values.ValueClass = values.MultiProcessValue()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "intent_requests_total",
            "HTTP requests by endpoint and status code",
            ["endpoint", "status"],
            registry=r,
        )
        self.request_duration = Histogram(
            "intent_request_duration_seconds",
            "HTTP request latency",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inference_duration = Histogram(
            "intent_inference_duration_seconds",
            "Model time per batch (tokenize + infer + postprocess)",
            ["backend"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_wait = Histogram(
            "intent_queue_wait_seconds",
            "Time a text waited for its batch to start",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram("intent_batch_size", "Texts per model call", buckets=BATCH_BUCKETS, registry=r)
        self.inline_batches = Counter(
            "intent_inline_batches", "Model calls run on the event loop (a lone text at light load)", registry=r
        )
        self.predictions = Counter("intent_predictions_total", "Returned intents", ["intent"], registry=r)
        self.oos = Counter("intent_oos_total", "Out-of-scope answers by reason", ["reason"], registry=r)
        # Gauges in multiprocess mode: in-flight requests add up over live workers; model info is 1 if any has it.
        self.inflight = Gauge(
            "intent_inflight_requests", "Requests being handled", registry=r, multiprocess_mode="livesum"
        )
        self.model_info = Gauge(
            "intent_model_info",
            "Loaded model (value 1)",
            ["model", "backend", "precision"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.cache = Counter(
            "intent_cache_requests", "Prediction cache lookups (INTENT_CACHE_SIZE > 0)", ["result"], registry=r
        )
        self.http_refusals = Counter(
            "intent_http_refusals",
            "Connections and requests refused by the HTTP guard before the app sees them, by reason",
            ["reason"],
            registry=r,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        for reason in OOS_REASONS:
            self.oos.labels(reason=reason)
        for result in ("hit", "miss"):
            self.cache.labels(result=result)
        for reason in REFUSAL_REASONS:
            self.http_refusals.labels(reason=reason)

    def child(self, metric: Any, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: labels() takes a lock and validates on every call.

        For the per-request metrics, whose label values are bounded (endpoints, statuses, intents, reasons);
        a child that is ever removed (intent_model_info) must not be looked up here.
        """
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def http_refusal(self, reason: str) -> None:
        """Count one refusal by the HTTP guard (app.guard.count_refusals)."""
        self.child(self.http_refusals, reason).inc()

    def exposition(self) -> bytes:
        """Prometheus text format: this process's registry, or the sum over all workers' files."""
        if self.multiprocess_dir is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=self.multiprocess_dir)
        return generate_latest(registry)
