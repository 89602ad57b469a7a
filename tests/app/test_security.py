"""API key auth, request ids, structured logs, and request texts kept out of logs and metrics."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import pytest

from app.core.logs import make_handler
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio

KEY = "k3y-Ω-s3cret"  # non-ASCII on purpose: compared as bytes
GOOD = {"authorization": f"Bearer {KEY}".encode()}
PROTECTED = [
    ("POST", "/classify", {"json": {"text": "weather"}}),
    ("POST", "/classify/batch", {"json": {"texts": ["weather"]}}),
    ("GET", "/v1/model", {}),
    ("POST", "/admin/reload", {"json": {}}),
]
BAD_CREDENTIALS = [
    {},
    {"authorization": "Bearer wrong"},
    {"authorization": f"Bearer {KEY}x".encode()},
    {"authorization": f"Basic {KEY}".encode()},
    {"authorization": KEY.encode()},
    {"authorization": "Bearer "},
    {"authorization": b"Bearer \xff\xfe\x80"},  # bytes that are not valid UTF-8
    # Two keys: whichever one counted would be a guess, and a proxy may read the other.
    [(b"authorization", f"Bearer {KEY}".encode()), (b"authorization", b"Bearer wrong")],
    [(b"authorization", b"Bearer wrong"), (b"authorization", f"Bearer {KEY}".encode())],
    [(b"authorization", f"Bearer {KEY}".encode()), (b"authorization", f"Bearer {KEY}".encode())],
]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.parametrize(("method", "path", "kwargs"), PROTECTED)
async def test_protected_endpoints_need_the_key(manifest_only_package: Path, method: str, path: str, kwargs) -> None:
    root = manifest_only_package.parent
    async with running_app(manifest_only_package, "fake", api_key=KEY, model_root=root) as (client, app):
        calls = app.state.classifier.backend.calls
        before = len(calls)
        refused = [await client.request(method, path, headers=h, **kwargs) for h in BAD_CREDENTIALS]
        model_calls = len(calls) - before
        allowed = await client.request(method, path, headers=GOOD, **kwargs)
        metrics = (await client.get("/metrics")).text
    for r in refused:
        assert r.status_code == 401, r.text
        assert r.headers["www-authenticate"] == "Bearer"
        # The same answer whatever was wrong: nothing to learn from it.
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.json()["error"]["message"] == "authentication required"
    assert model_calls == 0
    assert allowed.status_code == 200, allowed.text
    endpoint = path
    assert f'intent_requests_total{{endpoint="{endpoint}",status="401"}} {float(len(BAD_CREDENTIALS))}' in metrics


async def test_auth_comes_before_validation(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake", api_key=KEY) as (client, _):
        r = await client.post("/classify", json={"text": "", "top_k": "x"})
    assert r.status_code == 401  # an anonymous caller learns nothing about the request format


@pytest.mark.parametrize("path", ["/classify", "/classify/batch", "/admin/reload"])
@pytest.mark.parametrize(
    "body",
    [b'{"text":', b"\xff\xfe", b"[" * 5000, b"x" * 70_000],
    ids=["malformed", "not-utf8", "nested", "over-the-body-limit"],
)
async def test_the_key_is_checked_before_the_body_is_read(manifest_only_package: Path, path: str, body: bytes) -> None:
    root = manifest_only_package.parent
    async with running_app(manifest_only_package, "fake", api_key=KEY, model_root=root) as (client, _):
        r = await client.post(path, content=body, headers={"content-type": "application/json"})
        keyed = await client.post(path, content=body, headers={"content-type": "application/json", **GOOD})
    assert r.status_code == 401, r.text  # an anonymous client learns nothing, whatever it sends
    assert r.json()["error"] == {"code": "unauthorized", "message": "authentication required",
                                 "request_id": r.headers["x-request-id"]}  # fmt: skip
    assert r.headers["www-authenticate"] == "Bearer"
    assert keyed.status_code in (400, 413), keyed.text  # with the key, the body's own error


async def test_health_readiness_and_metrics_stay_open(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake", api_key=KEY) as (client, _):
        statuses = [(await client.get(p)).status_code for p in ("/healthz", "/readyz", "/metrics")]
    assert statuses == [200, 200, 200]


async def test_metrics_can_require_the_key(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake", api_key=KEY, metrics_require_auth=True) as (client, _):
        anonymous = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"authorization": "Bearer nope"})
        allowed = await client.get("/metrics", headers=GOOD)
        health = await client.get("/healthz")
    assert anonymous.status_code == 401
    assert wrong.status_code == 401
    assert allowed.status_code == 200
    assert "intent_requests_total" in allowed.text
    assert health.status_code == 200


async def test_without_a_key_everything_is_open_but_admin_does_not_exist(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake", api_key="") as (client, app):  # empty = no key
        assert app.state.settings.api_key is None
        classify = await client.post("/classify", json={"text": "weather"}, headers={"authorization": "Bearer x"})
        reload = await client.post("/admin/reload", json={}, headers={"authorization": "Bearer x"})
    assert classify.status_code == 200
    assert reload.status_code == 404
    assert reload.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123.DEF_4", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("has space", False),
        ("<script>", False),
        ("", False),
        ("id\u00e9", False),
    ],
)
async def test_client_request_id_is_kept_only_when_safe(manifest_only_package: Path, sent: str, kept: bool) -> None:
    async with running_app(manifest_only_package, "fake") as (client, _):
        r = await client.post("/classify", json={"text": ""}, headers={"x-request-id": sent.encode()})
    rid = r.headers["x-request-id"]
    assert r.json()["error"]["request_id"] == rid
    if kept:
        assert rid == sent
    else:
        assert rid != sent
        assert len(rid) == 16
        assert int(rid, 16) >= 0


async def test_json_logs_carry_the_request_id(manifest_only_package: Path) -> None:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    logger = logging.getLogger("app")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        async with running_app(manifest_only_package, "fake") as (client, app):

            async def logs_something() -> dict:
                logging.getLogger("app.probe").info("inside a request")
                return {}

            app.add_api_route("/probe", logs_something)
            r = await client.get("/probe", headers={"x-request-id": "req-42"})
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert r.status_code == 200
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    probe = next(rec for rec in records if rec["logger"] == "app.probe")
    assert probe["request_id"] == "req-42"
    assert probe["message"] == "inside a request"
    assert probe["level"] == "INFO"
    assert probe["time"].endswith("+00:00")
    startup = next(rec for rec in records if rec["message"].startswith("ready: serving"))
    assert startup["request_id"] is None or startup["request_id"] == "-"


async def test_every_error_log_line_carries_its_request_id(manifest_only_package: Path) -> None:
    stream = io.StringIO()
    handler = make_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        async with running_app(manifest_only_package, "fake", max_batch_size=1) as (client, app):

            async def broken() -> dict:
                raise RuntimeError("a bug")

            app.add_api_route("/broken", broken)
            crashed = await client.get("/broken", headers={"x-request-id": "req-500"})
            backend = app.state.classifier.backend
            backend.fail_on = {len(backend.calls)}
            failed = await client.post("/classify", json={"text": "weather"}, headers={"x-request-id": "req-503"})
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    assert crashed.status_code == 500
    assert crashed.headers["x-request-id"] == "req-500"
    assert crashed.json()["error"] == {
        "code": "internal_error",
        "message": "internal server error",
        "request_id": "req-500",
    }
    assert "a bug" not in crashed.text
    assert failed.status_code == 503
    records = [json.loads(line) for line in stream.getvalue().splitlines()]
    errors = [(rec["request_id"], rec["message"]) for rec in records if rec["level"] == "ERROR"]
    assert errors == [
        ("req-500", "unhandled error on /broken"),
        ("req-503", f"inference failed on a text (RuntimeError: fake failure on call {len(backend.calls) - 1})"),
    ]
    assert "RuntimeError: a bug" in next(rec["exception"] for rec in records if rec["request_id"] == "req-500")


async def test_texts_never_in_logs_or_metric_labels(
    manifest_only_package: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "weather at 221B Baker Street for card 4111111111111111"
    caplog.set_level(logging.DEBUG)
    async with running_app(manifest_only_package, "fake", max_text_chars=100) as (client, app):
        backend = app.state.classifier.backend
        ok = await client.post("/classify", json={"text": secret})
        backend.fail_on = {len(backend.calls) + i for i in range(3)}  # the batch and each text retried alone
        failed = await client.post("/classify/batch", json={"texts": [secret, secret]})
        invalid = await client.post("/classify", json={"text": secret * 3})
        wrong_type = await client.post("/classify", json={"text": secret, "top_k": secret})
        metrics = (await client.get("/metrics")).text
    assert [ok.status_code, failed.status_code, invalid.status_code, wrong_type.status_code] == [200, 503, 422, 422]
    assert any(rec.levelno >= logging.ERROR for rec in caplog.records)  # the failure was logged...
    logged = caplog.text + "\n".join(rec.getMessage() for rec in caplog.records)  # tracebacks included
    assert "Baker" not in logged  # ...without the text, at any level
    assert "Baker" not in metrics
    for r in (failed, invalid, wrong_type):
        assert "Baker" not in r.text  # error bodies do not echo it either
