"""The direct route for POST /classify: the FastAPI route's answers and errors, without its per-request cost."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import fastapi.routing
import pytest

import app.api.fastpath
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio
TEXTS = ["please transfer my money", "what is the dow stock doing", "book a flight", "weather"]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def routed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that reach a FastAPI route."""
    calls: list[str] = []
    handle = fastapi.routing.APIRoute.handle

    async def counting(self: fastapi.routing.APIRoute, scope: dict, *args: Any) -> Any:
        calls.append(scope["path"])
        return await handle(self, scope, *args)

    monkeypatch.setattr(fastapi.routing.APIRoute, "handle", counting)
    return calls


async def test_well_formed_requests_never_reach_the_fastapi_route(manifest_only_package: Path, routed: list) -> None:
    async with running_app(manifest_only_package, "fake") as (client, _):
        for text in TEXTS:
            r = await client.post("/classify", json={"text": text, "top_k": 2})
            assert r.status_code == 200, r.text
        assert routed == []
        assert (await client.post("/classify/batch", json={"texts": TEXTS})).status_code == 200
    assert routed == ["/classify/batch"]  # the batch route is FastAPI's


async def test_answers_are_the_fastapi_routes_answers(
    tiny_package: Path, monkeypatch: pytest.MonkeyPatch, routed: list
) -> None:
    bodies = [{"text": t, "top_k": k} for t in TEXTS for k in (0, 1, 3, 10)] + [{"text": "weather"}]
    async with running_app(tiny_package, "onnx") as (client, _):
        fast = [await client.post("/classify", json=b) for b in bodies]
        assert routed == []
        monkeypatch.setattr(app.api.fastpath, "_well_formed", lambda *_: None)  # everything to the route
        slow = [await client.post("/classify", json=b) for b in bodies]
    assert len(routed) == len(bodies)
    for f, s in zip(fast, slow, strict=True):
        assert (f.status_code, f.headers["content-type"]) == (s.status_code, s.headers["content-type"])
        assert f.json() == s.json()
        assert not re.search(rb'": |, "', f.content)  # compact separators, as FastAPI's (a client may diff bodies)
        assert f.headers["x-request-id"]
        assert f.headers["content-length"] == str(len(f.content))
    assert {f.json()["oos"] for f in fast} == {True, False}


@pytest.mark.parametrize(
    ("body", "status", "code", "settings"),
    [
        (b'{"text": "   "}', 422, "invalid_request", {}),
        (b'{"text": "weather", "top_k": 11}', 422, "invalid_request", {}),
        (b'{"text": "weather", "extra": 1}', 422, "invalid_request", {}),
        (b'{"text": "\\ud800"}', 422, "invalid_request", {}),
        (b'{"text": "' + b"a" * 1001 + b'"}', 422, "invalid_request", {}),
        (b'{"text": "weather"', 400, "malformed_json", {}),
        (b"\xff\xfe", 400, "malformed_json", {}),
        (b'["weather"]', 400, "invalid_body", {}),
    ],
)
async def test_other_requests_get_the_fastapi_routes_errors(
    manifest_only_package: Path, routed: list, body: bytes, status: int, code: str, settings: dict
) -> None:
    async with running_app(manifest_only_package, "fake", **settings) as (client, _):
        r = await client.post("/classify", content=body, headers={"content-type": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (status, code), r.text
    assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
    assert routed == ["/classify"]


async def test_a_request_without_the_key_reaches_no_route(manifest_only_package: Path, routed: list) -> None:
    async with running_app(manifest_only_package, "fake", api_key="k" * 32) as (client, _):
        r = await client.post("/classify", json={"text": "weather"})
    assert (r.status_code, r.json()["error"]["code"]) == (401, "unauthorized")
    assert routed == []  # refused by the service middleware before the body is read


async def test_the_right_key_takes_the_fast_path(manifest_only_package: Path, routed: list) -> None:
    key = "k" * 32
    async with running_app(manifest_only_package, "fake", api_key=key) as (client, _):
        r = await client.post("/classify", json={"text": "weather"}, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 200
    assert routed == []


async def test_classifier_errors_keep_their_envelope(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake") as (client, app_):
        app_.state.classifier.batcher.closing = True  # as during shutdown: enqueue refuses
        r = await client.post("/classify", json={"text": "weather"})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    assert r.json() == {
        "error": {
            "code": "shutting_down",
            "message": "the service is shutting down; retry",
            "request_id": r.headers["x-request-id"],
        }
    }


async def test_a_body_in_several_chunks_is_read_whole(manifest_only_package: Path, routed: list) -> None:
    body = json.dumps({"text": "please transfer my money", "top_k": 1}).encode()
    chunks = [body[:7], body[7:20], body[20:]]
    async with running_app(manifest_only_package, "fake") as (_, app_):
        sent: list[dict] = []
        messages = [{"type": "http.request", "body": c, "more_body": i < 2} for i, c in enumerate(chunks)]

        async def receive() -> dict:
            return messages.pop(0) if messages else {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/classify", "raw_path": b"/classify", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"testserver"), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
        }  # fmt: skip
        await app_(scope, receive, send)
    assert sent[0]["status"] == 200
    assert routed == []
    assert json.loads(sent[1]["body"])["intent"] == "transfer"
