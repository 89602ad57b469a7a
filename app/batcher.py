"""Dynamic micro-batching: texts that arrive together share one model call, off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger(__name__)


class InferenceError(RuntimeError):
    """The model failed on a batch; only that batch's callers see it."""


@dataclass
class _Item:
    text: str
    future: asyncio.Future[np.ndarray]
    enqueued: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    """Queue + one worker task; the model runs in a single dedicated thread."""

    def __init__(
        self,
        predict: Callable[[list[str]], np.ndarray],
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        on_batch: Callable[[int, float, list[float]], None] | None = None,
    ) -> None:
        self.predict = predict
        self.max_batch_size = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.on_batch = on_batch
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the worker task on the running loop."""
        self.task = asyncio.create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Cancel the worker, fail queued callers, release the thread."""
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(InferenceError("service is shutting down"))
        self.executor.shutdown(wait=True)

    async def submit(self, text: str) -> np.ndarray:
        """Queue one text and wait for its probability row."""
        future: asyncio.Future[np.ndarray] = asyncio.get_running_loop().create_future()
        await self.queue.put(_Item(text, future))
        return await future

    async def _collect(self) -> list[_Item]:
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
            batch = await self._collect()
            # Callers that went away while queued cost no model time.
            batch = [item for item in batch if not item.future.done()]
            if not batch:
                continue
            start = time.perf_counter()
            waits = [start - item.enqueued for item in batch]
            try:
                probs = await loop.run_in_executor(self.executor, self.predict, [i.text for i in batch])
            except Exception as exc:
                logger.exception("inference failed on a batch of %d", len(batch))
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(InferenceError("inference failed"))
                del exc
                continue
            if self.on_batch is not None:
                self.on_batch(len(batch), time.perf_counter() - start, waits)
            for item, row in zip(batch, probs, strict=True):
                if not item.future.done():
                    item.future.set_result(row)
