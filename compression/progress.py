"""Step-by-step progress for commands whose steps give no progress bar (ONNX export, quantization)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def step(logger: logging.Logger, what: str) -> Iterator[None]:
    """Log `what` when it starts and how long it took when it ends (a failure is left to its own error)."""
    logger.info("%s ...", what)
    start = time.perf_counter()
    yield
    logger.info("%s: done in %.1f s", what, time.perf_counter() - start)
