"""Write the settings table of docs/configuration.md from `app.core.config.Settings` (or check that it is current).

python -m scripts.settings_table          # rewrite the table between the markers
python -m scripts.settings_table --check  # exit 1 when the file's table is not what Settings gives
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from app.core.config import Settings

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "configuration.md"
START, END = "<!-- settings-table -->", "<!-- /settings-table -->"

# What each setting means, where the field's own description is too short for a reader; a field that has
# neither an entry here nor a description fails the table (so a new setting cannot go undocumented).
MEANINGS: dict[str, str] = {
    "model_dir": "the model package to serve (relative paths are taken from the working directory)",
    "model_root": "every package served (at startup and by `/admin/reload`) must resolve inside this folder; "
    "unset: `MODEL_DIR`'s parent",
    "backend": "`onnx-int8`, `onnx`, `torch`, `torch-int8` (the torch ones need the `torch` extra), "
    "or `fake` (weight-free, for tests)",
    "oos_threshold": "override the package's calibrated threshold, on the scale of its `oos_score` "
    "(a probability only for `msp`); unset: the manifest's",
    "num_threads": "model (intra-op) threads per worker; 0 = CPU cores / `WORKERS`",
    "exact_int8": "`onnx-int8` on an x86 CPU without VNNI, where ORT's kernels for int8 weights saturate: compute "
    "them exactly with its uint8 kernels (the package's measured answers; 15-23% more time per query there, measured). "
    "false: the faster, saturating kernels. No effect on other CPUs or backends",
    "workers": "server processes sharing the port, each with its own model and event loop (`python -m app` only; "
    "`/admin/reload` needs 1)",
    "max_batch_size": "most texts in one model call (micro-batching)",
    "max_wait_ms": "extra wait for more texts before a model call; 0 = none (texts that arrive while the model "
    "runs form the next batch anyway); a lone request never waits",
    "inline_max_ms": "a lone text at light load (recent model calls averaged under 1.5 texts) runs on the event "
    "loop instead of the model thread when one-text calls have taken at most this long: no hand-off between "
    "threads, about 0.2 ms less at one connection; the loop answers nothing else meanwhile. 0 = always the thread",
    "gc_full_after": "middle-generation garbage collections between two full ones (the third value of CPython's "
    "`gc.set_threshold`; CPython's own is 10): fewer full passes over the objects of many open connections, "
    "each of which stops the event loop; 0 = CPython's setting",
    "max_queue": "texts waiting for the model; beyond it requests get 429 with `Retry-After`",
    "request_timeout_ms": "queue wait + inference per request; beyond it 504 and the queued work is dropped",
    "shutdown_timeout_s": "on SIGTERM, how long accepted requests may take to finish",
    "keep_alive_s": "idle keep-alive connection lifetime; keep it above the idle timeout of the clients and "
    "proxies in front",
    "max_text_chars": "longest accepted text (422 beyond)",
    "max_batch_texts": "most texts in one `/classify/batch` request (422 beyond); must be <= `MAX_QUEUE`",
    "max_top_k": "largest accepted `top_k`",
    "max_body_bytes": "largest accepted request body (413 beyond)",
    "cache_size": "LRU prediction cache entries, keyed by the tokenizer's normalization; 0 = off",
    "warmup_runs": "warm-up model calls before `/readyz` turns 200",
    "api_key": "when set, `Authorization: Bearer <key>` is required on `/classify`, `/classify/batch`, "
    "`/v1/model` and `/admin/reload`; unset: those are open and `/admin/reload` is 404",
    "metrics_require_auth": "also require the key on `/metrics`",
    "host": "listen address of `python -m app` (the Docker image sets 0.0.0.0)",
    "port": "listen port of `python -m app`",
    "log_level": "`debug`, `info`, `warning`, `error`, `critical` (any case)",
    "log_format": "`text`, or `json`: one JSON object per line with the request id",
}


def show_default(value: Any) -> str:
    """A default as the table prints it."""
    if value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def render() -> str:
    """The Markdown table of every setting: environment variable, default, meaning."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        meaning = MEANINGS.get(name) or field.description
        if not meaning:
            raise ValueError(f"setting {name!r} has no meaning: add it to MEANINGS or give the field a description")
        rows.append(f"| `INTENT_{name.upper()}` | `{show_default(field.default)}` | {meaning} |")
    unknown = set(MEANINGS) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"MEANINGS lists settings that do not exist: {sorted(unknown)}")
    return "\n".join(rows)


def replace_table(text: str, table: str) -> str:
    """`text` with the part between the markers replaced by `table`."""
    head, start, rest = text.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"{DOC.name} lacks the markers {START} ... {END}")
    return f"{head}{START}\n{table}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    """Rewrite or check the table; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only check; exit 1 when the table is stale")
    parser.add_argument("--doc", type=Path, default=DOC)
    args = parser.parse_args(argv)
    current = args.doc.read_text()
    wanted = replace_table(current, render())
    if args.check:
        if wanted != current:
            logging.error("%s: the settings table is stale; run python -m scripts.settings_table", args.doc)
            return 1
        return 0
    args.doc.write_text(wanted)
    return 0


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    sys.exit(main())
