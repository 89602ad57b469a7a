"""POST /classify and /classify/batch: validate, queue the texts, wait for the answers."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Depends, Request

from app.api.body import JSONRoute
from app.api.deps import get_classifier, require_key
from app.api.errors import APIError, errors
from app.api.schemas import BatchRequest, BatchResponse, ClassifyRequest, ClassifyResponse, is_blank
from app.batcher import InferenceError, QueueFullError
from app.tokenizer import Reading
from app.tracing import current_trace

logger = logging.getLogger(__name__)
router = APIRouter(route_class=JSONRoute)


def text_problem(text: str, max_chars: int, where: str = "text") -> str | None:
    """Why the service refuses this text (422), or None."""
    if is_blank(text):
        return f"{where}: must not be empty or whitespace only (control and zero-width characters count as whitespace)"
    if len(text) > max_chars:
        return f"{where}: {len(text)} characters exceeds the limit of {max_chars}"
    return None


def top_k_problem(top_k: int, max_top_k: int) -> str | None:
    """Why the service refuses this top_k (422), or None."""
    return f"top_k: must be at most {max_top_k}" if top_k > max_top_k else None


def _check(problem: str | None) -> None:
    if problem is not None:
        raise APIError(422, "invalid_request", problem)


# Most answers come within milliseconds: a task watching for the client leaving is started only for the slow
# ones, so the common path costs no extra task (a per-request task measured ~15% of the event loop's CPU).
WATCH_DISCONNECT_AFTER_S = 0.02


async def _disconnected(request: Request) -> None:
    """Return when the client goes away: the body is read, so the next ASGI message is the disconnect."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _first_done(futures: list[asyncio.Future], timeout: float) -> None:
    """Wait until one of the futures is done or the timeout passes (asyncio.wait without its task/set overhead)."""
    if timeout <= 0 or any(f.done() for f in futures):
        return
    waiter = asyncio.get_running_loop().create_future()

    def wake(_: object = None) -> None:
        if not waiter.done():
            waiter.set_result(None)

    timer = asyncio.get_running_loop().call_later(timeout, wake)
    for future in futures:
        future.add_done_callback(wake)
    try:
        await waiter
    finally:
        timer.cancel()
        for future in futures:
            future.remove_done_callback(wake)


def unreadable_problem(index: int | None) -> str:
    """The 422 message for a text the model's tokenizer reduces to nothing (`index` within a batch)."""
    where = "text" if index is None else f"texts.{index}"
    return (
        f"{where}: nothing is left for the model to read once its tokenizer normalizes the text "
        "(it holds only combining marks, variation selectors, format or other characters the tokenizer drops)"
    )


async def run_texts(request: Request, texts: list[str], top_k: int, batch: bool = False) -> list[dict]:
    """Queue the texts, then wait for the answers, the request timeout or the client leaving: whichever is first."""
    classifier = get_classifier(request)
    unknown = []
    for i, text in enumerate(texts):
        reading = classifier.reading(text)
        if reading is Reading.NOTHING:
            raise APIError(422, "invalid_request", unreadable_problem(i if batch else None))
        if reading is Reading.UNKNOWN:
            unknown.append(i)
    trace = current_trace.get()  # None unless tracing is on
    if trace is not None:
        trace.texts, trace.model, trace.backend = len(texts), classifier.manifest.name, classifier.backend.name
    try:
        futures = classifier.submit(texts)  # same step as the lookup: a reload cannot slip in between
    except QueueFullError as exc:
        raise APIError(429, "overloaded", "too many requests are waiting; retry shortly", {"Retry-After": "1"}) from exc
    except InferenceError as exc:
        raise APIError(503, "shutting_down", "the service is shutting down; retry", {"Retry-After": "1"}) from exc
    timeout_ms = request.app.state.settings.request_timeout_ms
    answer: asyncio.Future = futures[0] if len(futures) == 1 else asyncio.gather(*futures)
    gone: asyncio.Future | None = None
    deadline = time.monotonic() + timeout_ms / 1000
    try:
        await _first_done([answer], min(WATCH_DISCONNECT_AFTER_S, timeout_ms / 1000))
        if not answer.done():
            gone = asyncio.ensure_future(_disconnected(request))
            await _first_done([answer, gone], deadline - time.monotonic())
    finally:
        # Timed out, client gone, or this handler cancelled: queued texts are dropped before the model sees them.
        if gone is not None:
            gone.cancel()
        if not answer.done():
            answer.cancel()
            # A cancelled gather ends with a CancelledError of its own: read it, or asyncio logs it as an error.
            answer.add_done_callback(_read_outcome)
        for future in futures:
            future.cancel()  # no-op for finished ones; with one failed text, the others still queued are dropped
    if answer.done() and not answer.cancelled():
        try:
            rows = [answer.result()] if len(futures) == 1 else answer.result()
        except InferenceError as exc:
            raise APIError(
                503, "inference_failed", "the model could not process this request; retry", {"Retry-After": "1"}
            ) from exc
        for i in unknown:  # the model answered [UNK] tokens, not the text: out of scope
            rows[i] = classifier.unknown_words(rows[i])
        if trace is None:
            return classifier.answers(rows, top_k)
        decided = time.time_ns()
        answers = classifier.answers(rows, top_k)
        trace.decision = (decided, time.time_ns(), sum(a["oos"] for a in answers))
        return answers
    # The log format adds the request id (app.core.logs): the messages need not.
    if gone is not None and gone.done():
        # Nobody reads this answer; 499 (nginx's "client closed request") keeps it apart in the metrics.
        logger.info("the client closed the connection before its answer (%d text(s))", len(texts))
        raise APIError(499, "client_closed", "the client closed the connection")
    logger.warning("no answer within %g ms (%d text(s)); answered 504", timeout_ms, len(texts))
    raise APIError(504, "timeout", f"no answer within {timeout_ms:g} ms; retry later")


def _read_outcome(future: asyncio.Future) -> None:
    """Mark a finished future's exception as read (its texts were dropped: nobody waits for the answer)."""
    if not future.cancelled():
        future.exception()


@router.post(
    "/classify",
    response_model=ClassifyResponse,
    responses=errors(400, 401, 413, 422, 429, 503, 504),
    dependencies=[Depends(require_key)],
)
async def classify(body: ClassifyRequest, request: Request) -> dict:
    """Classify one utterance; out-of-scope answers carry a fallback message."""
    settings = request.app.state.settings
    _check(text_problem(body.text, settings.max_text_chars))
    _check(top_k_problem(body.top_k, settings.max_top_k))
    (result,) = await run_texts(request, [body.text], body.top_k)
    return result


@router.post(
    "/classify/batch",
    response_model=BatchResponse,
    responses=errors(400, 401, 413, 422, 429, 503, 504),
    dependencies=[Depends(require_key)],
)
async def classify_batch(body: BatchRequest, request: Request) -> dict:
    """Classify up to INTENT_MAX_BATCH_TEXTS utterances; results keep the request order."""
    settings = request.app.state.settings
    if not body.texts:
        raise APIError(422, "invalid_request", "texts: must contain at least one text")
    if len(body.texts) > settings.max_batch_texts:
        raise APIError(
            422,
            "invalid_request",
            f"texts: {len(body.texts)} texts exceeds the limit of {settings.max_batch_texts}",
        )
    for i, text in enumerate(body.texts):
        _check(text_problem(text, settings.max_text_chars, f"texts.{i}"))
    _check(top_k_problem(body.top_k, settings.max_top_k))
    return {"results": await run_texts(request, body.texts, body.top_k, batch=True)}
