"""The micro-batcher with a fake model function: merging, no idle wait, ordering, failures, cancellation, and which
thread runs each call."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import numpy as np
import pytest

from app.batcher import InferenceError, MicroBatcher

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Model:
    """Returns [len(text), batch index] rows; optionally blocks, or fails on chosen calls or texts."""

    def __init__(self, delay: float = 0.0, fail_on: set[int] | None = None, poison: set[str] | None = None) -> None:
        self.delay = delay
        self.fail_on = fail_on or set()  # calls that fail whatever their texts (a passing fault)
        self.poison = poison or set()  # texts that fail every call they are in
        self.batches: list[list[str]] = []
        self.threads: list[threading.Thread] = []  # the thread of each call
        self.release = threading.Event()
        self.release.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.release.wait(5)
        call = len(self.batches)
        self.batches.append(list(texts))
        self.threads.append(threading.current_thread())
        time.sleep(self.delay)
        if call in self.fail_on or self.poison & set(texts):
            raise RuntimeError("boom: secret internal detail")
        return np.asarray([[len(t), call] for t in texts], dtype=np.float32)


def submit(batcher: MicroBatcher, text: str) -> asyncio.Future[np.ndarray]:
    """Queue one text the way the service does (MicroBatcher.enqueue); the future resolves to its row."""
    (future,) = batcher.enqueue([text])
    return future


def where(model: Model) -> list[str]:
    """For each model call: "loop" when it ran on the event loop's thread (this test's), else "model"."""
    return ["loop" if t is threading.current_thread() else "model" for t in model.threads]


async def started(model: Model, **kwargs) -> MicroBatcher:
    batcher = MicroBatcher(model, **kwargs)
    await batcher.start()
    return batcher


async def test_concurrent_requests_merge_up_to_max_batch_size() -> None:
    model = Model()
    model.release.clear()  # hold the first call so the rest pile up in the queue
    batcher = await started(model, max_batch_size=4, max_wait_ms=0)
    tasks = [submit(batcher, "x" * i) for i in range(1, 10)]
    await asyncio.sleep(0.05)
    model.release.set()
    rows = await asyncio.gather(*tasks)
    await batcher.stop()
    assert [len(b) for b in model.batches] == [4, 4, 1]
    assert [int(r[0]) for r in rows] == list(range(1, 10))  # each caller got its own row, in order


async def test_lone_request_is_not_delayed_by_max_wait() -> None:
    model = Model()
    batcher = await started(model, max_batch_size=32, max_wait_ms=500)
    start = time.perf_counter()
    await submit(batcher, "hello")
    elapsed = time.perf_counter() - start
    await batcher.stop()
    assert elapsed < 0.25  # far below the 500 ms max wait


async def test_max_wait_gathers_stragglers_under_load() -> None:
    model = Model()
    model.release.clear()
    batcher = await started(model, max_batch_size=8, max_wait_ms=200)
    first = submit(batcher, "a")
    await asyncio.sleep(0.02)
    group = [submit(batcher, t) for t in ("b", "c")]
    model.release.set()
    await first
    await asyncio.sleep(0.05)
    late = submit(batcher, "d")  # arrives inside the 200 ms window
    await asyncio.gather(*group, late)
    await batcher.stop()
    assert model.batches == [["a"], ["b", "c", "d"]]


async def test_a_failing_text_fails_alone_and_its_batch_mates_are_answered(caplog: pytest.LogCaptureFixture) -> None:
    model = Model(poison={"ccc"})
    model.release.clear()
    batcher = await started(model, max_batch_size=2, max_wait_ms=0)
    tasks = [submit(batcher, t) for t in ("a", "bb", "ccc", "dddd", "eeeee")]
    await asyncio.sleep(0.05)
    caplog.set_level(logging.INFO, logger="app.batcher")
    model.release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    after = await submit(batcher, "ffffff")
    await batcher.stop()
    # The batch holding the bad text fails, then each of its texts runs alone: only the bad one fails.
    assert model.batches == [["a", "bb"], ["ccc", "dddd"], ["ccc"], ["dddd"], ["eeeee"], ["ffffff"]]
    assert isinstance(results[2], InferenceError)
    assert "secret" not in str(results[2])
    assert [int(r[0]) for i, r in enumerate(results) if i != 2] == [1, 2, 4, 5]
    assert int(after[0]) == 6
    records = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert records == [
        (
            "WARNING",
            "inference failed on a batch of 2 (RuntimeError: boom: secret internal detail); "
            "retrying its texts one by one",
        ),
        ("ERROR", "inference failed on a text (RuntimeError: boom: secret internal detail)"),
    ]
    assert all(r.exc_info is None for r in caplog.records)  # one line per failure, no traceback


async def test_a_passing_fault_costs_no_caller() -> None:
    model = Model(fail_on={1})
    model.release.clear()
    batcher = await started(model, max_batch_size=2, max_wait_ms=0)
    tasks = [submit(batcher, t) for t in ("a", "bb", "ccc", "dddd", "eeeee")]
    await asyncio.sleep(0.05)
    model.release.set()
    results = await asyncio.gather(*tasks)
    await batcher.stop()
    assert [len(b) for b in model.batches] == [2, 2, 1, 1, 1]
    assert [int(r[0]) for r in results] == [1, 2, 3, 4, 5]


async def test_a_caller_gone_during_the_retry_costs_no_model_time() -> None:
    model = Model(delay=0.1, poison={"bad"})  # the failing batch runs long enough to leave during it
    model.release.clear()
    batcher = await started(model, max_batch_size=8, max_wait_ms=0)
    first = submit(batcher, "first")
    await asyncio.sleep(0.02)
    futures = batcher.enqueue(["bad", "gone", "kept"])
    await asyncio.sleep(0.02)
    model.release.set()
    await first
    await asyncio.sleep(0.02)
    futures[1].cancel()  # while the batch that will fail is in the model
    with pytest.raises(InferenceError):
        await futures[0]
    assert int((await futures[2])[0]) == 4
    await batcher.stop()
    assert model.batches == [["first"], ["bad", "gone", "kept"], ["bad"], ["kept"]]


async def test_cancelled_waiting_client_costs_no_model_time() -> None:
    model = Model()
    model.release.clear()
    batcher = await started(model, max_batch_size=8, max_wait_ms=0)
    first = submit(batcher, "first")
    await asyncio.sleep(0.02)
    gone = submit(batcher, "gone")
    kept = submit(batcher, "kept")
    await asyncio.sleep(0.02)
    gone.cancel()
    model.release.set()
    await first
    assert int((await kept)[0]) == 4
    assert int((await submit(batcher, "again"))[0]) == 5  # the worker survived the cancellation
    await batcher.stop()
    assert ["gone"] not in model.batches
    assert all("gone" not in b for b in model.batches)


async def test_stop_finishes_accepted_work_then_refuses() -> None:
    model = Model(delay=0.01)
    model.release.clear()
    batcher = await started(model, max_batch_size=1, max_wait_ms=0)
    tasks = [submit(batcher, t) for t in ("a", "bb", "ccc")]
    await asyncio.sleep(0.02)
    model.release.set()
    await batcher.stop()
    assert [int(r[0]) for r in await asyncio.gather(*tasks)] == [1, 2, 3]
    with pytest.raises(InferenceError, match="shutting down"):
        await submit(batcher, "late")


async def test_stop_is_bounded_when_the_model_hangs() -> None:
    model = Model()
    model.release.clear()  # the model never returns within the stop timeout
    batcher = await started(model, max_batch_size=1, max_wait_ms=0)
    tasks = [submit(batcher, t) for t in ("a", "b")]
    await asyncio.sleep(0.02)
    start = time.perf_counter()
    await batcher.stop(timeout=0.2)
    assert time.perf_counter() - start < 2
    results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
    assert all(isinstance(r, InferenceError) for r in results)
    model.release.set()


async def test_a_lone_text_at_light_load_runs_on_the_event_loop() -> None:
    model = Model()
    batcher = await started(model, inline_max_ms=50)
    rows = [await submit(batcher, t) for t in ("a", "bb", "ccc")]
    await batcher.stop()
    # The first one-text call is timed in the model thread; once one-text calls are known to be fast, lone texts
    # skip the hand-off.
    assert where(model) == ["model", "loop", "loop"]
    assert [int(r[0]) for r in rows] == [1, 2, 3]


async def test_after_a_full_batch_lone_texts_stay_in_the_model_thread_until_the_load_falls() -> None:
    model = Model()
    batcher = await started(model, max_batch_size=8, inline_max_ms=50)
    await submit(batcher, "a")
    await asyncio.gather(*batcher.enqueue(["b"] * 8))  # queued together: one call of 8 texts
    for _ in range(10):
        await submit(batcher, "c")
    await batcher.stop()
    assert [len(b) for b in model.batches] == [1, 8] + [1] * 10
    # The batch of 8 lifts the average to 2.4 texts per call; each lone text then lowers it by a fifth of the way to
    # 1, and below 1.5 (after five) lone texts run on the loop again.
    assert where(model) == ["model", "model"] + ["model"] * 5 + ["loop"] * 5


@pytest.mark.parametrize(("delay", "inline_max_ms"), [(0.02, 10), (0.0, 0)], ids=["slow-model", "off"])
async def test_a_slow_model_or_a_zero_bound_keeps_every_call_in_the_model_thread(
    delay: float, inline_max_ms: float
) -> None:
    model = Model(delay=delay)
    batcher = await started(model, inline_max_ms=inline_max_ms)
    for t in ("a", "bb", "ccc"):
        await submit(batcher, t)
    await batcher.stop()
    assert where(model) == ["model"] * 3


async def test_a_failing_inline_call_fails_its_caller_only() -> None:
    model = Model(poison={"bad"})
    batcher = await started(model, inline_max_ms=50)
    await submit(batcher, "a")
    with pytest.raises(InferenceError, match="inference failed"):
        await submit(batcher, "bad")
    assert int((await submit(batcher, "ccc"))[0]) == 3
    await batcher.stop()
    assert where(model) == ["model", "loop", "loop"]
