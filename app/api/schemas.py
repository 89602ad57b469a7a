"""Request and response models of the HTTP API."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StrictInt, StrictStr

# "Blank" = nothing a reader (or the tokenizer, which drops control and format characters) would see: only
# whitespace in Python's sense or in JSON Schema's (ECMA-262) sense, and the control (Cc) and format (Cf)
# characters of the Basic Multilingual Plane (zero-width spaces, bidi marks, NUL ...). Written out, not \p{..}:
# the documented pattern and the handlers' check then agree for every client, whichever dialect it validates with.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f"  # the C0 and C1 controls (Cc)
BLANK_CHARS = (
    rf"\s{CONTROL_CHARS}\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f"
    r"\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
)
NOT_BLANK = f"[^{BLANK_CHARS}]"  # OpenAPI pattern: at least one non-blank character
_BLANK = re.compile(f"[{BLANK_CHARS}]*")


def is_blank(text: str) -> bool:
    """True for an empty text or one made only of whitespace, control and format characters."""
    return _BLANK.fullmatch(text) is not None


def _integral_number(value: Any) -> Any:
    # JSON has one number type: 3.0 is the integer 3 (as JSON Schema says); "3" and true stay invalid.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


JsonInt = Annotated[StrictInt, BeforeValidator(_integral_number)]


def encodable(text: str) -> str:
    """The text unchanged, or ValueError when it holds an unpaired surrogate (JSON allows "\\ud800", UTF-8 does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        # The tokenizer (and the cache key) work on UTF-8: such a text could only fail later, inside the model.
        raise ValueError(
            f"unpaired surrogate U+{ord(text[exc.start]):04X} at position {exc.start} is not valid Unicode"
        ) from None
    return text


Text = Annotated[StrictStr, AfterValidator(encodable)]


_CONTROL = re.compile(f"[{CONTROL_CHARS}]")


def path_text(path: str) -> str:
    """The path unchanged, or ValueError when no file system could hold it (a control character, a surrogate)."""
    encodable(path)
    bad = _CONTROL.search(path)
    if bad is not None:
        raise ValueError(f"control character U+{ord(bad[0]):04X} at position {bad.start()} is not allowed in a path")
    return path


# 4096: Linux's PATH_MAX, the longest path a system call takes. The pattern documents path_text's rule.
PATH_PATTERN = f"^[^{CONTROL_CHARS}]+$"
PathText = Annotated[
    StrictStr,
    Field(min_length=1, max_length=4096, json_schema_extra={"pattern": PATH_PATTERN}),
    AfterValidator(path_text),
]


class ClassifyRequest(BaseModel):
    """One text to classify."""

    model_config = ConfigDict(extra="forbid")

    text: Text = Field(description="the user's utterance", examples=["transfer $100 from checking to savings"])
    top_k: JsonInt = Field(default=3, ge=0, description="how many alternative intents to return")


class BatchRequest(BaseModel):
    """Several texts to classify in one call."""

    model_config = ConfigDict(extra="forbid")

    texts: list[Text] = Field(description="utterances, at most INTENT_MAX_BATCH_TEXTS")
    top_k: JsonInt = Field(default=3, ge=0)


class Alternative(BaseModel):
    """A ranked candidate intent."""

    intent: str
    confidence: float


class Fallback(BaseModel):
    """What to tell a user whose request is out of scope."""

    message: str
    domains: list[str]


class ClassifyResponse(BaseModel):
    """The decision for one text."""

    intent: str
    confidence: float = Field(description="probability of the model's arg-max label")
    oos: bool
    fallback: Fallback | None
    alternatives: list[Alternative]
    model: str
    backend: str


class BatchResponse(BaseModel):
    """Decisions in the order of the request's texts."""

    results: list[ClassifyResponse]


class ErrorBody(BaseModel):
    """Every 4xx/5xx body."""

    code: str
    message: str
    request_id: str | None = None


class ErrorResponse(BaseModel):
    """Envelope of an error."""

    error: ErrorBody


class ModelInfo(BaseModel):
    """Summary of the loaded package."""

    name: str
    backend: str
    precision: str
    labels: int
    oos_label: str
    oos_score: str
    oos_threshold: float
    max_length: int
    domains: list[str]
    source: dict
    metrics: dict
    created_at: str


class ReloadRequest(BaseModel):
    """Which package to load; by default the one being served (re-read from disk)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model_dir: PathText | None = Field(
        default=None, description="package folder; a relative path is taken under INTENT_MODEL_ROOT"
    )


class ReloadResponse(BaseModel):
    """The package now serving and the one it replaced."""

    model_config = ConfigDict(protected_namespaces=())

    previous: str
    model: ModelInfo
