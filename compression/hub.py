"""The Hugging Face Hub: offline mode, set before transformers and datasets load, when the hub cannot be reached."""

from __future__ import annotations

import logging
import os
import socket
import threading
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 2.0  # DNS included: a resolver that never answers counts as no hub
OFFLINE_HINT = "the Hugging Face Hub cannot be reached from here, so only locally cached ids and names load"
went_offline = False  # set by offline_unless_reachable(), for error messages


def hub_reachable(endpoint: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub's host opens within `timeout` seconds."""
    url = urlparse(endpoint or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    if not url.hostname:
        return False
    port = url.port or (80 if url.scheme == "http" else 443)
    answer: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            answer.append(True)
        except OSError:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # getaddrinfo has no timeout of its own
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


def offline_unless_reachable() -> bool:
    """Set HF_HUB_OFFLINE=1 when the hub is out of reach (and the user set neither way); True when it did.

    Offline, an HF id or dataset name is read from the local cache or refused at once, instead of after half a
    minute of retries. It must run before transformers or datasets is imported: both read the setting then.
    """
    if any(name in os.environ for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")):
        return False
    global went_offline
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    went_offline = True
    logger.debug("the Hugging Face Hub cannot be reached: HF ids and dataset names come from the local cache only")
    return True
