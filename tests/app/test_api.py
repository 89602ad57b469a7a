"""The HTTP API through the real app: answers, fallback, model info, health and readiness."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from app.core.config import Settings
from app.main import create_app
from app.package import read_manifest, write_manifest
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio

BACKENDS = ["torch", "torch-int8", "onnx", "onnx-int8"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize("backend", BACKENDS)
async def test_classify_in_scope_on_every_backend(tiny_package: Path, backend: str) -> None:
    async with running_app(tiny_package, backend) as (client, _):
        r = await client.post("/classify", json={"text": "please transfer my money", "top_k": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"] == "transfer"
    assert body["oos"] is False
    assert body["fallback"] is None
    assert body["backend"] == backend
    assert body["model"] == "tiny-bert"
    assert 0.3 <= body["confidence"] <= 1.0
    assert len(body["alternatives"]) == 2
    assert all(a["intent"] != "transfer" for a in body["alternatives"])
    assert body["alternatives"][0]["confidence"] >= body["alternatives"][1]["confidence"]


@pytest.mark.parametrize("backend", BACKENDS)
async def test_oos_label_gives_fallback_listing_domains(tiny_package: Path, backend: str) -> None:
    async with running_app(tiny_package, backend) as (client, _):
        r = await client.post("/classify", json={"text": "what is the dow stock doing"})
    body = r.json()
    assert r.status_code == 200
    assert body["intent"] == "oos"
    assert body["oos"] is True
    assert body["fallback"]["domains"] == ["banking", "travel", "utility"]
    assert "banking, travel and utility" in body["fallback"]["message"]


async def test_low_confidence_is_oos_with_threshold_override(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx", oos_threshold=0.999) as (client, _app):
        r = await client.post("/classify", json={"text": "please transfer my money", "top_k": 1})
        metrics = (await client.get("/metrics")).text
    body = r.json()
    assert body["intent"] == "oos"
    assert body["oos"] is True
    # The model's best in-scope guess survives as the first alternative.
    assert body["alternatives"] == [{"intent": "transfer", "confidence": pytest.approx(body["confidence"])}]
    assert 'intent_oos_total{reason="low_confidence"} 1.0' in metrics


@pytest.mark.parametrize("cache_size", [0, 64])
async def test_a_text_read_only_as_unknown_tokens_is_out_of_scope(tiny_package: Path, cache_size: int) -> None:
    """The model answers [UNK] tokens, not the text: an emoji alone got an in-scope intent with confidence."""
    from app.backends.base import load_backend

    backend = load_backend("onnx", tiny_package)
    unk = backend.encoder.unk_id
    assert unk is not None
    for text in ("\U0001f642 \u2603", "transfer\U0001f642", "x" * 101):  # the premise
        assert set(backend.tokenize([text]).input_ids[0, 1:-1].tolist()) == {unk}
    # "transfer\U0001f642" is one word to WordPiece, which has no pieces for it: [UNK] alone; so is a word over 100
    # characters, ASCII or not.
    texts = ["please transfer my money", "\U0001f642 \u2603", "transfer \U0001f642", "transfer\U0001f642", "x" * 101]
    async with running_app(tiny_package, "onnx", oos_threshold=0.0, cache_size=cache_size) as (client, _app):
        single = (await client.post("/classify", json={"text": texts[1]})).json()
        batch = (await client.post("/classify/batch", json={"texts": texts})).json()["results"]
        again = (await client.post("/classify", json={"text": texts[1]})).json()  # from the cache, when on
        metrics = (await client.get("/metrics")).text
    assert single == again
    assert (single["intent"], single["oos"], single["fallback"] is not None) == ("oos", True, True)
    assert single["alternatives"]  # the model's guesses stay visible
    assert [r["intent"] for r in batch] == ["transfer", "oos", "transfer", "oos", "oos"]  # known words keep theirs
    assert 'intent_oos_total{reason="unknown_words"} 5.0' in metrics
    assert 'intent_oos_total{reason="low_confidence"} 0.0' in metrics


async def test_energy_rule_from_the_manifest_decides(package_copy: Path) -> None:
    from app.backends.base import load_backend
    from app.package import read_manifest, write_manifest

    text = "please transfer my money"
    logits = load_backend("onnx", package_copy).predict_logits([text])[0]
    in_scope = np.delete(logits, read_manifest(package_copy).labels.index("oos")).astype(np.float64)
    energy = float(np.log(np.exp(in_scope).sum()))
    manifest = read_manifest(package_copy)
    for threshold, oos in ((energy - 0.05, False), (energy + 0.05, True)):
        manifest.oos_score, manifest.oos_threshold = "energy", threshold
        write_manifest(package_copy, manifest)
        async with running_app(package_copy, "onnx") as (client, _):
            body = (await client.post("/classify", json={"text": text, "top_k": 1})).json()
            info = (await client.get("/v1/model")).json()
        assert (info["oos_score"], info["oos_threshold"]) == ("energy", pytest.approx(threshold))
        assert body["oos"] is oos
        assert body["intent"] == ("oos" if oos else "transfer")
        # confidence stays a probability whatever the score: the softmax of the best label
        assert 0.0 < body["confidence"] <= 1.0


async def test_batch_keeps_request_order(tiny_package: Path) -> None:
    texts = ["is it sunny", "set a timer", "transfer money", "my account balance", "translate to spanish"]
    async with running_app(tiny_package, "onnx-int8") as (client, _):
        r = await client.post("/classify/batch", json={"texts": texts, "top_k": 0})
    assert r.status_code == 200
    results = r.json()["results"]
    assert [x["intent"] for x in results] == ["weather", "timer", "transfer", "balance", "translate"]
    assert all(x["alternatives"] == [] for x in results)


async def test_fake_backend_needs_no_weights(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake") as (client, _):
        r = await client.post("/classify", json={"text": "what is the weather"})
        oos = await client.post("/classify", json={"text": "nothing matches here"})
    assert r.json()["intent"] == "weather"
    assert oos.json()["oos"] is True  # flat scores: confidence 1/6 < threshold 0.3


async def test_model_info_and_health(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx") as (client, _):
        info = (await client.get("/v1/model")).json()
        health = await client.get("/healthz")
        ready = await client.get("/readyz")
    assert info["name"] == "tiny-bert"
    assert info["labels"] == 6
    assert info["backend"] == "onnx"
    assert info["precision"] == "fp32"
    assert info["oos_threshold"] == pytest.approx(0.3)
    assert info["oos_score"] == "msp"
    assert health.status_code == 200
    assert ready.status_code == 200


async def test_not_ready_before_lifespan_and_after_shutdown(tiny_package: Path) -> None:
    app = create_app(Settings(model_dir=tiny_package, backend="onnx"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/healthz")).status_code == 200
        r = await client.get("/readyz")
        assert r.status_code == 503
        assert r.headers["retry-after"] == "1"
        assert (await client.head("/readyz")).status_code == 503
        r = await client.post("/classify", json={"text": "transfer money"})
        assert r.status_code == 503
        assert r.json()["error"]["code"] == "not_ready"
        async with app.router.lifespan_context(app):
            assert (await client.get("/readyz")).status_code == 200
            # Load balancers and uptime checkers that probe with HEAD get the same answer, without a body.
            for path in ("/healthz", "/readyz"):
                head = await client.head(path)
                assert (head.status_code, head.content) == (200, b""), path
        assert (await client.get("/readyz")).status_code == 503


async def test_request_id_header(tiny_package: Path) -> None:
    async with running_app(tiny_package, "onnx") as (client, _):
        r = await client.post("/classify", json={"text": ""})
    assert r.headers["x-request-id"] == r.json()["error"]["request_id"]


async def test_model_info_shows_no_absolute_path_of_the_machine(manifest_only_package: Path, tmp_path: Path) -> None:
    root = tmp_path / "models"
    package = root / "v2"
    package.mkdir(parents=True)
    manifest = read_manifest(manifest_only_package)
    manifest.source = {
        "base_model": str(root / "teacher"),
        "dataset": "/srv/data/clinc150/data_full.json",
        "teacher_logits": f"precomputed; 2 part(s) read from the logits cache {tmp_path}/cache",
        "hyperparameters": {"output_dir": str(package), "data_path": "data/clinc.json", "note": "N/A"},
        "extra_teachers": [str(root / "t2"), "https://example.org/a/b"],  # paths in a list (older distill manifests)
    }
    write_manifest(package, manifest)
    key = {"authorization": "Bearer k"}
    async with running_app(package, "fake", api_key="k", model_root=root) as (client, _):
        info = await client.get("/v1/model", headers=key)
        reloaded = await client.post("/admin/reload", json={}, headers=key)
    assert info.status_code == 200
    assert info.json()["source"] == {
        "base_model": "teacher",
        "dataset": "data_full.json",
        "teacher_logits": "precomputed; 2 part(s) read from the logits cache cache",
        "hyperparameters": {"output_dir": "v2", "data_path": "data/clinc.json", "note": "N/A"},
        "extra_teachers": ["t2", "https://example.org/a/b"],
    }
    assert reloaded.json()["model"]["source"] == info.json()["source"]
    for r in (info, reloaded):
        assert str(tmp_path) not in r.text
        assert "/srv" not in r.text
