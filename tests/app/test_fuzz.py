"""Fuzzing: schemathesis over the whole OpenAPI schema, hypothesis over /classify texts and raw bodies.

Both run through the real ASGI app (lifespan included) on the weight-free fake backend. Seeds are fixed
(derandomize) so CI is reproducible; every run still sends several hundred distinct requests.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.python import asgi

from app.core.config import Settings
from app.main import create_app

logger = logging.getLogger(__name__)
KEY = "fuzz-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.function_scoped_fixture],
)


@pytest.fixture(scope="module")
def fuzz_app(tmp_path_factory: pytest.TempPathFactory, manifest_only_package: Path) -> Iterator:
    """An app with a key (so auth paths are fuzzed too) and a model root that holds only its own package."""
    root = tmp_path_factory.mktemp("fuzzroot")
    shutil.copytree(manifest_only_package, root / "package")
    # Limits small enough that every schema-valid body fits in INTENT_MAX_BODY_BYTES (64 KiB).
    app = create_app(
        Settings(model_dir=root / "package", backend="fake", api_key=KEY, max_text_chars=200, max_batch_texts=8)
    )
    yield app
    asgi.shutdown_lifespans()  # the schemathesis client started the app's lifespan on a shared loop


@pytest.fixture(scope="module")
def api_schema(fuzz_app):
    """The app's own OpenAPI document, loaded through ASGI."""
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


OPERATIONS = [
    ("POST", "/classify"),
    ("POST", "/classify/batch"),
    ("POST", "/admin/reload"),
    ("GET", "/v1/model"),
    ("GET", "/readyz"),
    ("GET", "/healthz"),
    ("GET", "/metrics"),
]
WITH_BODY = {op for op in OPERATIONS if op[0] == "POST"}
CASES = [
    (method, path, mode)
    for method, path in OPERATIONS
    for mode in GenerationMode
    if mode is GenerationMode.POSITIVE or (method, path) in WITH_BODY
]


def test_every_operation_is_fuzzed(api_schema) -> None:
    operations = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert operations == set(OPERATIONS)


# (The pytest plugin's lazy `from_fixture` does not work with pytest 9, so operations are driven by hand.)
@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_openapi_conformance(api_schema, method: str, path: str, mode: GenerationMode) -> None:
    """No 5xx, and status, headers and body as documented, for schema-valid and schema-invalid requests."""
    operation = api_schema[path][method]
    statuses: Counter[int] = Counter()

    @given(case=operation.as_strategy(generation_mode=mode))
    @FUZZ
    def check(case) -> None:
        statuses[case.call_and_validate(headers=AUTH).status_code] += 1

    check()
    # Counts: pytest -o log_cli=true --log-cli-level=INFO tests/app/test_fuzz.py
    logger.info("%s %s %s: %d cases, statuses %s", method, path, mode.value, statuses.total(), dict(statuses))
    if (method, path) in WITH_BODY:
        assert statuses.total() >= 50  # the generator really explored (max_examples=60)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, manifest_only_package: Path) -> Iterator[asgi.ASGIClient]:
    """A requests-style client on an app that lets texts of 10,000+ characters through to the model."""
    root = tmp_path_factory.mktemp("textroot")
    shutil.copytree(manifest_only_package, root / "package")
    app = create_app(Settings(model_dir=root / "package", backend="fake", max_text_chars=20_000))
    with asgi.get_client(app) as c:
        yield c
    asgi.shutdown_lifespans()


def assert_handled(response, allowed: set[int]) -> None:
    """A 2xx/4xx from the allowed set, with the error envelope on every error."""
    assert response.status_code in allowed, response.text[:300]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"code", "message", "request_id"}


# Any code point, surrogates included: JSON can carry a lone surrogate as an escape.
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=600)
HOSTILE = st.sampled_from(
    [
        "\x00",
        "weather\x00\x00",
        "\u202eweather\u202c",  # right-to-left override
        "مرحبا الطقس",  # Arabic (RTL)
        "שלום",  # Hebrew (RTL)
        "🙂" * 200,
        "👩‍👩‍👧‍👦" * 50,  # ZWJ sequences
        "\ud800",  # lone surrogate
        "\ufeff\ufffe\uffff",
        "e\u0301" * 200,  # combining marks
        "\t\n\r\x0b\x0c",
        "\x1b[31mweather\x1b[0m",
        "weather " * 1500,  # 12,000 chars
        "x" * 10_001,
        "weather" * 3000,  # 21,000 chars: over INTENT_MAX_TEXT_CHARS
    ]
)


@given(text=st.one_of(ANY_TEXT, HOSTILE))
@FUZZ
def test_classify_any_text(client, text: str) -> None:
    """Any string as the text: 200 or a clear 4xx, never a 5xx."""
    r = client.post("/classify", data=json.dumps({"text": text}), headers={"content-type": "application/json"})
    assert_handled(r, {200, 422})
    if r.status_code == 200:
        assert r.json()["intent"]


@given(texts=st.lists(st.one_of(ANY_TEXT, HOSTILE), min_size=0, max_size=20))
@FUZZ
def test_batch_any_texts(client, texts: list[str]) -> None:
    """Any list of strings: 200 or 4xx (413 when the body passes 64 KiB)."""
    r = client.post("/classify/batch", data=json.dumps({"texts": texts}), headers={"content-type": "application/json"})
    assert_handled(r, {200, 413, 422})


def _json_text_with(raw: bytes) -> bytes:
    return b'{"text": "' + raw + b'"}'


@given(
    body=st.one_of(
        st.binary(max_size=2000),  # anything at all
        st.binary(max_size=500).map(_json_text_with),  # valid JSON shape, invalid UTF-8 inside the string
        st.sampled_from(
            [
                b'{"text": "\xff\xfe"}',
                b'{"text": "\xc3\x28"}',  # truncated 2-byte sequence
                b'{"text": "\xed\xa0\x80"}',  # UTF-8-encoded surrogate
                b'{"text": "\xf4\x90\x80\x80"}',  # above U+10FFFF
                b'\xef\xbb\xbf{"text": "weather"}',  # UTF-8 BOM
                b'{"text": "weather"}\x00',
                b'{"text": NaN}',
                b'{"text": "weather", "top_k": 1e309}',
                b'{"text": "weather", "top_k": 99999999999999999999999999}',
                b"[" * 5000 + b"]" * 5000,  # deep nesting
                b'{"text": "' + b"\\ud83d" * 100 + b'"}',  # escaped lone surrogates
            ]
        ),
    ),
    content_type=st.sampled_from(["application/json", "text/plain", "application/x-www-form-urlencoded", ""]),
)
@FUZZ
def test_classify_raw_bodies(client, body: bytes, content_type: str) -> None:
    """Raw bytes, invalid UTF-8 included, under any content type: never a 5xx."""
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/classify", data=body, headers=headers)
    assert_handled(r, {200, 400, 422})
    health = client.get("/healthz")
    assert health.status_code == 200
