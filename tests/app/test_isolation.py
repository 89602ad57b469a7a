"""A text the model cannot take fails alone: never the requests batched with it, with or without the cache."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from app.batcher import InferenceError
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio

GOOD = [
    "how much is in my account",
    "send money to my mom",
    "will it rain now",
    "set a timer for ten minutes",
    "how do i say thanks in spanish",
    "what is the dow stock",
    "transfer money please",
    "is it sunny",
]
SURROGATE = "weather \ud800 now"  # valid JSON ("\ud800"), not encodable as UTF-8


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def until(condition, timeout: float = 10.0) -> None:
    """Poll the event loop until `condition` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("cache_size", [0, 16])
async def test_bad_texts_interleaved_with_good_ones_fail_no_good_request(tiny_package: Path, cache_size: int) -> None:
    async with running_app(tiny_package, "onnx", max_batch_size=64, cache_size=cache_size) as (client, app):
        classifier = app.state.classifier
        batcher = classifier.batcher
        expected = [classifier.decide(row, 3)["intent"] for row in classifier.backend.predict_logits(GOOD)]
        entered, gate, calls = threading.Event(), threading.Event(), []
        model = batcher.predict

        def held(texts: list[str]):
            calls.append(list(texts))
            entered.set()
            gate.wait(10)
            return model(texts)

        batcher.predict = held
        first = asyncio.create_task(client.post("/classify", json={"text": "hold the model"}))
        await until(entered.is_set)
        good, refused, inside = [], [], []
        for text in GOOD:
            good.append(asyncio.create_task(client.post("/classify", json={"text": text})))
            # Through HTTP the bad text is refused at the edge; queued directly (past the edge), it reaches the
            # real tokenizer and fails there, in the same batch as the good texts.
            body = json.dumps({"text": SURROGATE}).encode()
            refused.append(asyncio.create_task(client.post("/classify", content=body)))
            inside.extend(classifier.submit([SURROGATE]))
            await asyncio.sleep(0)
        await until(lambda: batcher.queue.qsize() == 2 * len(GOOD))
        gate.set()
        assert (await first).status_code == 200
        answers = await asyncio.gather(*good)
        refusals = await asyncio.gather(*refused)
        failures = await asyncio.gather(*inside, return_exceptions=True)
        metrics = (await client.get("/metrics")).text
    assert sorted(calls[1], key=GOOD.__contains__) == [SURROGATE] * len(GOOD) + GOOD  # one shared batch
    assert [r.status_code for r in answers] == [200] * len(GOOD)  # no good request failed
    assert [r.json()["intent"] for r in answers] == expected
    assert all(isinstance(f, InferenceError) for f in failures)
    for r in refusals:
        assert r.status_code == 422, r.text
        assert r.json()["error"]["message"] == ("text: unpaired surrogate U+D800 at position 8 is not valid Unicode")
    assert 'intent_requests_total{endpoint="/classify",status="500"}' not in metrics
    assert 'intent_requests_total{endpoint="/classify",status="503"}' not in metrics


async def test_cache_on_refuses_a_surrogate_with_422(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx", cache_size=8) as (client, app):
        bad = await client.post("/classify", content=b'{"text": "\\ud800"}')
        batch = await client.post("/classify/batch", content=b'{"texts": ["set a timer", "\\udc00x"]}')
        ok = await client.post("/classify", json={"text": "set a timer"})
        assert app.state.classifier.cache.key("\ud800") is None  # not cacheable, rather than an error
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["code"] == "invalid_request"
    assert "unpaired surrogate U+D800 at position 0" in bad.json()["error"]["message"]
    assert batch.status_code == 422, batch.text
    assert "texts.1: unpaired surrogate U+DC00 at position 0" in batch.json()["error"]["message"]
    assert ok.status_code == 200
