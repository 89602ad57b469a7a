"""How many made-up queries from outside CLINC150 each package refuses as oos (its own rule).

An informal check, never used for a choice: CLINC150's oos queries were collected like its in-scope
ones, so they do not show how a package treats keyboard mash, code or other languages.

    python scripts/outside_queries.py artifacts/teacher artifacts/student --backend onnx-int8
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# Queries with no CLINC150 intent. "what is the meaning of life", "play some jazz music" and
# "hola como estas" are left out on purpose: CLINC150 has meaning_of_life, play_music and greeting.
QUERIES = (
    "qwerty uiop",
    "zzzzzz",
    "asdf jkl",
    "xkcd",
    "lorem ipsum dolor sit amet",
    "write me a poem about the sea",
    "who won the world cup in 1998",
    "how do i fix a segfault in c",
    "recommend a good sci-fi novel",
    "is it safe to eat raw cookie dough",
    "what's the capital of mongolia",
    "explain quantum entanglement simply",
    "how many legs does a spider have",
    "🍕🍕🍕",
    "select * from users;",
)


def refused(package: Path, backend: str, queries: tuple[str, ...] = QUERIES) -> tuple[int, list[tuple[str, str]]]:
    """(number called oos, [(query, intent) for the others]) under the package's own oos rule."""
    from app.backends.base import load_backend
    from app.decision import decide
    from app.package import read_manifest

    manifest = read_manifest(package)
    logits = load_backend(backend, package).predict_logits(list(queries))
    oos = manifest.labels.index(manifest.oos_label)
    pred, _ = decide(logits, oos, manifest.oos_threshold, manifest.oos_score)
    missed = [(q, manifest.labels[i]) for q, i in zip(queries, pred.tolist(), strict=True) if i != oos]
    return len(queries) - len(missed), missed


def main(argv: list[str] | None = None) -> int:
    """Print one line per package."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("packages", type=Path, nargs="+")
    parser.add_argument("--backend", default="onnx-int8", choices=["torch", "torch-int8", "onnx", "onnx-int8"])
    args = parser.parse_args(argv)
    for package in args.packages:
        caught, missed = refused(package, args.backend)
        others = ", ".join(f"{q!r} -> {intent}" for q, intent in missed) or "none"
        print(f"{package}: {caught}/{len(QUERIES)} oos; answered: {others}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
