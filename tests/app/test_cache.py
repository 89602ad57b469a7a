"""The optional LRU prediction cache: hits skip the model, keys follow the tokenizer's normalization."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.backends.base import load_backend
from app.cache import PredictionCache
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_cache_hits_skip_the_model(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx", cache_size=2) as (client, app):
        backend = app.state.classifier.backend
        calls = []
        original = backend.infer
        backend.infer = lambda batch: calls.append(len(batch)) or original(batch)
        first = (await client.post("/classify", json={"text": "Transfer  my MONEY"})).json()
        second = (await client.post("/classify", json={"text": "transfer my money "})).json()
        await client.post("/classify", json={"text": "set a timer"})
        await client.post("/classify", json={"text": "is it sunny"})  # evicts "transfer my money"
        await client.post("/classify", json={"text": "transfer my money"})
        metrics = (await client.get("/metrics")).text
    assert first == second
    assert len(calls) == 4  # 5 requests, one hit
    assert 'intent_cache_requests_total{result="hit"} 1.0' in metrics
    assert 'intent_cache_requests_total{result="miss"} 4.0' in metrics


async def test_cache_off_by_default(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake") as (client, app):
        await client.post("/classify", json={"text": "weather"})
        await client.post("/classify", json={"text": "weather"})
        assert app.state.classifier.cache is None
        assert app.state.classifier.backend.calls[-2:] == [1, 1]


def test_key_is_the_tokenizers_normalization(tiny_package: Path) -> None:
    backend = load_backend("onnx", tiny_package)
    cache = PredictionCache(4, backend.normalize)
    assert cache.key("  Café\tTIMER ") == cache.key("cafe timer")
    assert cache.key("timer") != cache.key("timers")
