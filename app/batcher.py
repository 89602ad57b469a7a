"""Dynamic micro-batching: texts that arrive together share one model call, in the model thread (a lone text at
light load on a fast model: on the event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from app.core.logs import request_id_var
from app.tracing import BatchTiming, RequestTrace, current_trace

logger = logging.getLogger(__name__)
INFERENCE_THREAD = "inference"  # name prefix of the model threads
# Light load, for running a call on the event loop: recent model calls averaged fewer texts than this. The average
# weighs each new call by AVERAGE_WEIGHT, so after one full batch it takes about ten lone texts in a row to get here.
LIGHT_LOAD = 1.5
AVERAGE_WEIGHT = 0.2


class InferenceError(RuntimeError):
    """The model failed on a text even when run alone; only that text's caller sees it."""


class QueueFullError(RuntimeError):
    """The queue cannot take a request's texts now; the caller should retry later (429)."""


@dataclass
class _Item:
    text: str
    future: asyncio.Future[Any]
    enqueued: float = field(default_factory=time.perf_counter)
    # The worker task runs outside every request: log lines about this text name its request explicitly.
    request_id: str | None = field(default_factory=request_id_var.get)
    trace: RequestTrace | None = None  # set only when the request is traced (app.tracing)


def _summary(exc: BaseException) -> str:
    """Exception type and first line of its message, bounded: enough to tell faults apart in the log."""
    first = str(exc).split("\n", 1)[0][:200]
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


class MicroBatcher:
    """Queue + one worker task; the model runs in a single dedicated thread, or inline (`runs_inline`)."""

    def __init__(
        self,
        # predict(texts), or predict(texts, timing) for a batch with a traced request (see app.tracing).
        predict: Callable[..., Sequence[Any]],
        max_batch_size: int = 32,
        max_wait_ms: float = 0.0,
        on_batch: Callable[[int, float, list[float], bool], None] | None = None,
        max_queue: int = 0,
        inline_max_ms: float = 0.0,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch  # (texts, seconds, each text's queue wait, ran on the event loop)
        self.max_queue = max_queue  # 0 = unbounded
        self.inline_max = inline_max_ms / 1000.0  # 0 = every call in the model thread
        self.load = 1.0  # texts per model call, averaged over recent calls
        self.single_s = math.inf  # seconds of a one-text call, averaged over recent ones; unknown until one ran
        # The asyncio queue itself is unbounded: enqueue() enforces max_queue per request, and stop()'s sentinel
        # must always fit.
        self.queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self.closing = False
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=INFERENCE_THREAD)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker task on the running loop."""
        self.closing = False
        self.task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self, timeout: float = 10.0) -> None:
        """Refuse new texts, finish every queued one (bounded by timeout), then release the thread."""
        self.closing = True
        if self.task is not None and not self.task.done():
            self.queue.put_nowait(None)  # sentinel: the last item, since enqueue() now refuses
            try:
                await asyncio.wait_for(asyncio.shield(self.task), timeout)
            except TimeoutError:
                logger.warning("batcher did not drain within %.1f s; failing the rest", timeout)
                self.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self.task
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is not None and not item.future.done():
                item.future.set_exception(InferenceError("service is shutting down"))
        self.executor.shutdown(wait=False, cancel_futures=True)

    def enqueue(self, texts: list[str]) -> list[asyncio.Future[Any]]:
        """Queue all of a request's texts or none (QueueFullError); each future resolves to its row of the model output.

        Synchronous on purpose: the admission check and the puts cannot interleave with another request's.
        Cancelling a future drops its text before it reaches the model.
        """
        if self.closing:
            raise InferenceError("service is shutting down")
        if self.max_queue and self.queue.qsize() + len(texts) > self.max_queue:
            raise QueueFullError(f"{self.queue.qsize()} texts queued (limit {self.max_queue})")
        loop = asyncio.get_running_loop()
        trace = current_trace.get()
        if trace is not None:
            trace.enqueued_ns = time.time_ns()
        futures = []
        for text in texts:
            future: asyncio.Future[Any] = loop.create_future()
            self.queue.put_nowait(_Item(text, future, trace=trace))
            futures.append(future)
        return futures

    async def _collect(self) -> list[_Item | None]:
        """First item blocks; the rest are whatever is queued, plus a short wait only under load."""
        batch = [await self.queue.get()]
        while len(batch) < self.max_batch_size and not self.queue.empty():
            batch.append(self.queue.get_nowait())
        # A lone request runs at once (no idle wait); when others came together, more may be close.
        if 1 < len(batch) < self.max_batch_size and self.max_wait > 0:
            deadline = time.perf_counter() + self.max_wait
            while len(batch) < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self.queue.get(), remaining))
                except TimeoutError:
                    break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            collected = await self._collect()
            stopping = None in collected
            # Callers that went away while queued cost no model time.
            batch = [item for item in collected if item is not None and not item.future.done()]
            if batch:
                await self._process(loop, batch)
            if stopping:
                return

    async def _process(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        start = time.perf_counter()
        waits = [start - item.enqueued for item in batch]
        try:
            await self._infer(loop, batch, waits)
        except asyncio.CancelledError:
            self._fail(batch, "service is shutting down")
            raise
        except Exception as exc:
            if len(batch) == 1:
                self._fail_item(batch[0], exc)
                return
            # One text the model cannot take (or a passing fault) must not fail the texts batched with it:
            # each is retried alone, so only a text that fails by itself gets the error.
            logger.warning(
                "inference failed on a batch of %d (%s); retrying its texts one by one", len(batch), _summary(exc)
            )
            for item, wait in zip(batch, waits, strict=True):
                if item.future.done():  # the caller left meanwhile: no model time for it
                    continue
                try:
                    await self._infer(loop, [item], [wait + time.perf_counter() - start])
                except asyncio.CancelledError:
                    self._fail(batch, "service is shutting down")
                    raise
                except Exception as item_exc:
                    self._fail_item(item, item_exc)

    def runs_inline(self, texts: int) -> bool:
        """Whether a call for this many texts runs on the event loop: one text, nothing queued, light load, fast model.

        At one connection the hand-off to the model thread and back, and the model running on a core other than the
        one that just parsed the request, cost about 0.2 ms of a 2 ms answer (docs/experiments.md). Under load
        the thread keeps the loop free to parse the next batch while the model runs, so only a lone text at light
        load, on a model whose one-text calls have been within `inline_max`, runs on the loop.
        """
        return texts == 1 and self.queue.empty() and self.load < LIGHT_LOAD and self.single_s <= self.inline_max

    async def _infer(self, loop: asyncio.AbstractEventLoop, items: list[_Item], waits: list[float]) -> None:
        """One model call for these items; their futures get their rows (exceptions propagate)."""
        start = time.perf_counter()
        inline = self.runs_inline(len(items))
        self.load += AVERAGE_WEIGHT * (len(items) - self.load)
        timing = self._timing(items)
        texts = [i.text for i in items]
        call = (
            functools.partial(self.predict, texts) if timing is None else functools.partial(self._timed, texts, timing)
        )
        try:
            probs = call() if inline else await loop.run_in_executor(self.executor, call)
        except Exception:
            if timing is not None:
                timing.failed = True
            raise
        seconds = time.perf_counter() - start
        if len(items) == 1:
            self.single_s = (
                seconds if math.isinf(self.single_s) else self.single_s + AVERAGE_WEIGHT * (seconds - self.single_s)
            )
        if self.on_batch is not None:
            self.on_batch(len(items), seconds, waits, inline)
        for item, row in zip(items, probs, strict=True):
            if not item.future.done():
                item.future.set_result(row)

    @staticmethod
    def _timing(items: list[_Item]) -> BatchTiming | None:
        """A record of this model call for the traced requests among the items; None (the usual) when none is."""
        timing = None
        for item in items:
            if item.trace is not None:
                if timing is None:
                    timing = BatchTiming(len(items), time.time_ns())
                batches = item.trace.batches
                if not batches or batches[-1] is not timing:  # a request's texts are queued next to each other
                    batches.append(timing)
        return timing

    def _timed(self, texts: list[str], timing: BatchTiming) -> Sequence[Any]:
        """The model call of a traced batch, wherever it runs: `predict` marks where tokenization ends."""
        timing.start_ns = time.time_ns()
        try:
            return self.predict(texts, timing)
        finally:
            timing.end_ns = time.time_ns()

    @staticmethod
    def _fail_item(item: _Item, exc: Exception) -> None:
        # One line per failed text; the traceback only at DEBUG, so a stream of bad inputs cannot flood the log.
        token = request_id_var.set(item.request_id)
        trace_token = current_trace.set(item.trace)
        try:
            logger.error("inference failed on a text (%s)", _summary(exc))
            logger.debug("inference failure", exc_info=exc)
        finally:
            current_trace.reset(trace_token)
            request_id_var.reset(token)
        if not item.future.done():
            item.future.set_exception(InferenceError("inference failed"))

    @staticmethod
    def _fail(batch: list[_Item], message: str) -> None:
        for item in batch:
            if not item.future.done():
                item.future.set_exception(InferenceError(message))
