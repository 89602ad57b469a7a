"""Request and response models of the HTTP API."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class ClassifyRequest(BaseModel):
    """One text to classify."""

    model_config = ConfigDict(extra="forbid")

    text: StrictStr = Field(description="the user's utterance", examples=["transfer $100 from checking to savings"])
    top_k: StrictInt = Field(default=3, ge=0, description="how many alternative intents to return")


class BatchRequest(BaseModel):
    """Several texts to classify in one call."""

    model_config = ConfigDict(extra="forbid")

    texts: list[StrictStr] = Field(description="utterances, at most INTENT_MAX_BATCH_TEXTS")
    top_k: StrictInt = Field(default=3, ge=0)


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
    oos_threshold: float
    max_length: int
    domains: list[str]
    source: dict
    metrics: dict
    created_at: str
