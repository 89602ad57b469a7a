"""Bad requests get a 4xx with a clear message, never a 5xx."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


CASES = [
    # (path, kwargs for client.post, status, substring of the message)
    ("/classify", {"json": {"text": ""}}, 422, "text: must not be empty"),
    ("/classify", {"json": {"text": " \t\n "}}, 422, "whitespace"),
    ("/classify", {"json": {"text": "\u200b"}}, 422, "whitespace"),  # the tokenizer would see nothing
    ("/classify", {"json": {"text": "\x00\x01\x7f \u2060"}}, 422, "whitespace"),
    ("/classify/batch", {"json": {"texts": ["ok", "\u200d\ufeff"]}}, 422, "texts.1: must not be empty"),
    ("/classify", {"json": {"text": "x" * 201}}, 422, "201 characters exceeds the limit of 200"),
    ("/classify", {"json": {"text": 123}}, 422, "text: Input should be a valid string"),
    ("/classify", {"json": {"text": ["a"]}}, 422, "text: Input should be a valid string"),
    ("/classify", {"json": {}}, 422, "text: Field required"),
    ("/classify", {"json": {"text": "hi", "top_k": "3"}}, 422, "top_k: Input should be a valid integer"),
    ("/classify", {"json": {"text": "hi", "top_k": -1}}, 422, "top_k: Input should be greater than or equal to 0"),
    ("/classify", {"json": {"text": "hi", "top_k": 11}}, 422, "top_k: must be at most 10"),
    ("/classify", {"json": {"text": "hi", "extra": 1}}, 422, "extra: Extra inputs are not permitted"),
    ("/classify", {"json": ["text"]}, 400, "must be a JSON object"),
    ("/classify", {"content": b"null", "headers": {"content-type": "application/json"}}, 400, "must be a JSON object"),
    (
        "/classify",
        {"content": b'{"text": "unterminated', "headers": {"content-type": "application/json"}},
        400,
        "not valid JSON",
    ),
    (
        "/classify",
        {"content": b"\xff\xfe\x00garbage", "headers": {"content-type": "application/json"}},
        400,
        "request body is not UTF-8 (byte 0: invalid start byte); send JSON as UTF-8",
    ),
    ("/classify", {"content": b"text=hello", "headers": {"content-type": "text/plain"}}, 400, "not valid JSON"),
    ("/classify/batch", {"json": {"texts": []}}, 422, "texts: must contain at least one text"),
    ("/classify/batch", {"json": {"texts": ["a b"] * 9}}, 422, "9 texts exceeds the limit of 8"),
    ("/classify/batch", {"json": {"texts": ["ok", ""]}}, 422, "texts.1: must not be empty"),
    ("/classify/batch", {"json": {"texts": ["ok", 5]}}, 422, "texts.1: Input should be a valid string"),
    ("/classify/batch", {"json": {"texts": "not a list"}}, 422, "texts: Input should be a valid list"),
    ("/nope", {"json": {}}, 404, "Not Found"),
    ("/classify/", {"json": {"text": "hi"}}, 404, "Not Found"),  # no redirect to /classify
    # JSON the parser gives up on other than by a syntax error: still a 400 malformed_json, saying why, never a 500.
    *[
        (path, {"content": body, "headers": {"content-type": "application/json"}}, 400, message)
        for path, body, message in [
            ("/classify", b'{"text": "hi", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
            ("/classify/batch", b'{"texts": ["hi"], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested too deeply"),
            ("/classify", b'{"text": "caf\xe9"}', "not UTF-8 (byte 13: invalid continuation byte)"),
            ("/classify/batch", b'{"texts": ["caf\xe9"]}', "not UTF-8 (byte 15: invalid continuation byte)"),
            # A surrogate encoded as UTF-8 is not UTF-8; json.loads on bytes let it through as a character.
            ("/classify", b'{"text": "\xed\xa0\x80"}', "not UTF-8 (byte 10: invalid continuation byte)"),
            # JSON in UTF-16 with its byte-order mark: json.loads on bytes detects and reads it.
            ("/classify", '{"text": "hi"}'.encode("utf-16"), "not UTF-8 (byte 0: invalid start byte)"),
            ("/classify", b'{"text": "hi", "top_k": ' + b"9" * 5000 + b"}", "a number the parser refuses"),
            ("/classify", b"", "request body is empty; send a JSON object"),
            ("/classify/batch", b"", "request body is empty; send a JSON object"),
        ]
    ],
    # Valid JSON, but not valid Unicode: refused here rather than failing inside the tokenizer.
    (
        "/classify",
        {"content": b'{"text": "weather \\ud800"}'},
        422,
        "text: unpaired surrogate U+D800 at position 8 is not valid Unicode",
    ),
    (
        "/classify/batch",
        {"content": b'{"texts": ["weather", "\\udfff"]}'},
        422,
        "texts.1: unpaired surrogate U+DFFF at position 0",
    ),
]


@pytest.mark.parametrize(("path", "kwargs", "status", "message"), CASES)
async def test_bad_request(manifest_only_package: Path, path: str, kwargs: dict, status: int, message: str) -> None:
    async with running_app(manifest_only_package, "fake", max_text_chars=200, max_batch_texts=8) as (client, _):
        r = await client.post(path, **kwargs)
        metrics = (await client.get("/metrics")).text
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert message in error["message"]
    assert error["request_id"]
    endpoint = path if path not in ("/nope", "/classify/") else "other"
    assert f'intent_requests_total{{endpoint="{endpoint}",status="{status}"}} 1.0' in metrics


async def test_curl_form_content_type_is_read_as_json(manifest_only_package: Path) -> None:
    # `curl -d '{...}'` sends application/x-www-form-urlencoded; the README's examples rely on this.
    headers = {"content-type": "application/x-www-form-urlencoded"}
    async with running_app(manifest_only_package, "fake") as (client, _):
        r = await client.post("/classify", content=b'{"text": "what is the weather"}', headers=headers)
        batch = await client.post("/classify/batch", content=b'{"texts": ["weather"]}', headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["intent"] == "weather"
    assert batch.json()["results"][0]["intent"] == "weather"


async def test_wrong_method(manifest_only_package: Path) -> None:
    async with running_app(manifest_only_package, "fake") as (client, _):
        r = await client.get("/classify")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("declared", [True, False])
async def test_body_over_64_kib_is_refused(manifest_only_package: Path, declared: bool) -> None:
    payload = b'{"text": "' + b"a" * 70_000 + b'"}'

    async def chunks():
        for i in range(0, len(payload), 8192):
            yield payload[i : i + 8192]

    async with running_app(manifest_only_package, "fake", max_text_chars=100_000) as (client, app):
        calls = app.state.classifier.backend.calls
        before = len(calls)
        content = payload if declared else chunks()  # a generator body has no content-length
        r = await client.post("/classify", content=content, headers={"content-type": "application/json"})
        refused_calls = len(calls) - before
        after = await client.post("/classify", json={"text": "weather"})
    assert r.status_code == 413
    assert refused_calls == 0  # the model never saw the oversized request
    assert r.json()["error"]["message"] == "request body exceeds 65536 bytes"
    assert after.status_code == 200  # the service is unharmed
    assert calls[-1] == 1


def test_blank_is_whitespace_control_and_format_characters_in_the_check_and_the_schema() -> None:
    import unicodedata

    from app.api.schemas import NOT_BLANK, is_blank

    for code in range(0x10000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        invisible = char.isspace() or unicodedata.category(char) in {"Cc", "Cf", "Zs", "Zl", "Zp"}
        assert is_blank(char * 3) == invisible, f"U+{code:04X}"
        assert (re.search(NOT_BLANK, char) is None) == invisible, f"U+{code:04X}"  # the OpenAPI pattern
    assert not is_blank("\u200bweather\u200b")


async def test_unicode_and_control_characters_are_fine(manifest_only_package: Path) -> None:
    texts = ["météo ☀️ weather", "\u202eweather\u202c", "weather\x00\x01", "天气 weather", "🙂" * 50]
    async with running_app(manifest_only_package, "fake") as (client, _):
        for text in texts:
            r = await client.post("/classify", json={"text": text})
            assert r.status_code == 200, (text, r.text)


async def test_texts_the_tokenizer_reduces_to_nothing_are_refused(tiny_package: Path) -> None:
    """Combining marks, variation selectors and astral format characters pass the blank check, but uncased BERT's
    normalizer drops them all: the model would answer an empty input, with confidence."""
    unreadable = ["\u0301", "\u0301\u0308 \u0327", "\ufe0f", "\U000e0001\U000e0041", "\U0001d173"]
    readable = ["\u00e9", "\U0001f642", "\u0301weather", "\u5929", "e\u0301"]
    async with running_app(tiny_package, "onnx") as (client, _):
        for text in unreadable:
            r = await client.post("/classify", json={"text": text})
            assert r.status_code == 422, (text, r.text)
            assert r.json()["error"]["message"].startswith("text: nothing is left for the model to read"), r.text
            r = await client.post("/classify/batch", json={"texts": ["what is my balance", text]})
            assert r.status_code == 422, (text, r.text)
            assert r.json()["error"]["message"].startswith("texts.1: nothing is left"), r.text
        for text in readable:
            r = await client.post("/classify", json={"text": text})
            assert r.status_code == 200, (text, r.text)


def test_the_readable_shortcut_never_skips_a_text_the_shipped_tokenizer_reads_as_unk_alone() -> None:
    """Texts the encoder does not tokenize ahead of the batch (its `readable` shortcut) hold a known token."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from app.tokenizer import Reading, TextEncoder

    root = Path(__file__).resolve().parents[2]
    encoder = TextEncoder(root / "models" / "clinc150-minilm", 64)
    # "a" * 60 twice in a row is one word of 120 letters: WordPiece reads a word over 100 characters as [UNK].
    words = ["a", "Zq9", "transfer", "a" * 60, "[UNK]", "[SEP]"]
    pieces = st.sampled_from([*words, " ", "\t", "-", "'", "!", "\u00e9", "\U0001f642", "\u0301", "\u5929"])

    @settings(max_examples=400, deadline=None)
    @given(st.lists(pieces, min_size=1, max_size=8).map("".join))
    def check(text: str) -> None:
        if encoder.readable.search(text):
            ids = encoder.tokenizer.encode(text, add_special_tokens=False).ids
            assert set(ids) - {encoder.unk_id}, repr(text)
        assert encoder.reading(text) == encoder.full_reading(text), repr(text)

    check()
    assert encoder.reading("a" * 101) == Reading.UNKNOWN
    assert encoder.reading("a" * 100) == Reading.TOKENS


def test_special_tokens_a_client_types_are_read_as_text() -> None:
    """A typed "[PAD]" or "[SEP]" was the special token itself: the model read padding, or a second segment."""
    from app.tokenizer import TextEncoder

    root = Path(__file__).resolve().parents[2]
    encoder = TextEncoder(root / "models" / "clinc150-minilm", 64)
    names = ("[CLS]", "[SEP]", "[PAD]", "[UNK]", "[MASK]")
    special = {encoder.tokenizer.token_to_id(name) for name in names}
    ids = encoder([" ".join(names) + " what is my balance"]).input_ids[0].tolist()
    assert ids[0] == encoder.tokenizer.token_to_id("[CLS]")
    assert ids[-1] == encoder.tokenizer.token_to_id("[SEP]")
    assert not set(ids[1:-1]) & special, ids
