"""Your own intents: a CSV or JSONL file with `text` and `label` columns and an optional `split` column.

Without a `split` column the file is divided by `stratified_split`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections.abc import Iterator
from pathlib import Path

from app.decision import DEFAULT_OOS_LABEL
from compression.data.clinc import default_data_source, load_clinc
from compression.data.splits import (
    ClincData,
    DataError,
    Split,
    data_warnings,
    label_set,
    read_domains,
    same_text,
)

logger = logging.getLogger(__name__)

TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
SPLIT_SEED = 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")  # -sig: spreadsheet exports often start with a BOM
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from None


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, row) for every record; header names are matched without case or surrounding spaces."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""))  # newline="": quoted fields may span lines
    header = next(reader, None)
    if header is None:
        raise DataError(f"{path} is empty; it needs a header line with 'text' and 'label' columns")
    names = [h.strip().lower() for h in header]
    for field in ("text", "label"):
        if field not in names:
            other = next((d for d in (";", "\t", "|") if len(header) == 1 and d in header[0]), None)
            hint = f"; the file seems to be separated by {other!r}: save it comma-separated" if other else ""
            raise DataError(
                f"{path} has no {field!r} column (header: {', '.join(header)}); name the columns text,label{hint}"
            )
    for row in reader:
        if not row:  # blank lines
            continue
        if any(value.strip() for value in row[len(names) :]):
            raise DataError(
                f"{path}:{reader.line_num}: {len(row)} fields where the header has {len(names)}; a text that holds "
                f'a comma must be quoted, e.g. "a pizza, large",order_pizza'
            )
        yield reader.line_num, {name: value for name, value in zip(names, row, strict=False)}


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, object]]]:
    """(line number, object) for every non-blank line."""
    # "\n" only: str.splitlines would also cut at U+2028, which JSON strings may hold unescaped.
    for number, line in enumerate(_read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{number}: each line must be a JSON object with 'text' and 'label'")
        for field in ("text", "label"):
            if field not in row:
                raise DataError(f"{path}:{number}: no {field!r} field; each line needs 'text' and 'label'")
        yield number, row


def _cell(path: Path, number: int, row: dict[str, object], field: str) -> str:
    value = row.get(field)
    if field == "label" and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # numeric label ids in JSONL
    if value is None or (isinstance(value, str) and not value.strip()):
        raise DataError(f"{path}:{number}: empty {field}; every row needs a {field}")
    if not isinstance(value, str):
        raise DataError(f"{path}:{number}: {field} must be a string, got {value!r}")
    return value


def stratified_split(texts: list[str], labels: list[str], seed: int = SPLIT_SEED) -> tuple[Split, Split, Split]:
    """Train / validation / test, the same shares of every label (a fixed seed: the same file, the same split).

    Per label with n examples: round(n / 10) (halves up, at least 1) go to validation when n >= 2 and as many to
    test when n >= 3; the rest (at least 1) to train. So 100 -> 80/10/10, 10 -> 8/1/1, 3 -> 1/1/1, 2 -> 1/1/0.
    A label with one example cannot be in training and be measured, so it is refused (DataError).
    Each split keeps the file's order.
    """
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    single = sorted(label for label, idx in by_label.items() if len(idx) == 1)
    if single:
        raise DataError(
            f"label(s) with a single example: {', '.join(single[:5])}; give every label at least 2 examples "
            "(3 to be in the test split too) or add a split column"
        )
    rng = random.Random(seed)
    parts: dict[str, list[int]] = {"train": [], "validation": [], "test": []}
    for label in sorted(by_label):
        idx = list(by_label[label])
        rng.shuffle(idx)
        n = len(idx)
        share = max(1, int(n / 10 + 0.5))
        n_test = share if n >= 3 else 0
        n_val = share if n >= 2 else 0
        parts["test"] += idx[:n_test]
        parts["validation"] += idx[n_test : n_test + n_val]
        parts["train"] += idx[n_test + n_val :]

    if not parts["test"]:
        raise DataError(
            "the test split has no rows: every label has 2 examples; give a label at least 3 or add a split column"
        )

    def split(name: str) -> Split:
        idx = sorted(parts[name])
        return Split([texts[i] for i in idx], [labels[i] for i in idx])

    return split("train"), split("validation"), split("test")


def load_table(path: Path, seed: int = SPLIT_SEED) -> tuple[Split, Split, Split]:
    """Train / validation / test from a CSV or JSONL file of `text`, `label` and optionally `split` (DataError).

    With a `split` column every row names its split (train, validation or val, test; any case) and every split
    needs a row; without one, `stratified_split` divides the file.
    """
    path = Path(path)
    kind = TABLE_FORMATS.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"unknown data file extension {path.suffix!r} ({path}); use .csv or .jsonl")
    try:
        rows = list(_csv_rows(path) if kind == "csv" else _jsonl_rows(path))
    except csv.Error as exc:
        raise DataError(f"{path} is not a valid CSV file ({exc})") from None
    if not rows:
        raise DataError(f"{path} has no data rows")
    has_split = any("split" in row for _, row in rows)
    texts, labels, splits = [], [], []
    for number, row in rows:
        texts.append(_cell(path, number, row, "text"))
        labels.append(_cell(path, number, row, "label").strip())
        if has_split:
            value = row.get("split", "")
            name = SPLIT_NAMES.get(value.strip().lower()) if isinstance(value, str) else None
            if name is None:
                raise DataError(f"{path}:{number}: unknown split {value!r}; use train, validation (or val) or test")
            splits.append(name)
    if not has_split:
        texts, labels = _without_repeats(path, texts, labels)
        return stratified_split(texts, labels, seed)
    parts = []
    for name in ("train", "validation", "test"):
        idx = [i for i, s in enumerate(splits) if s == name]
        if not idx:
            raise DataError(f"{path}: the {name} split has no rows; give it some or drop the split column")
        parts.append(Split([texts[i] for i in idx], [labels[i] for i in idx]))
    return parts[0], parts[1], parts[2]


def _without_repeats(path: Path, texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """The rows less repeats of the same text with the same label (kept once), so no text lands in two splits."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for i, key in enumerate(zip(map(same_text, texts), labels, strict=True)):
        if key not in seen:
            seen.add(key)
            kept.append(i)
    if len(kept) < len(texts):
        logger.warning(
            "%s: %d row(s) repeat an earlier row's text and label; each is kept once, so that no text is both "
            "trained on and tested",
            path,
            len(texts) - len(kept),
        )
    return [texts[i] for i in kept], [labels[i] for i in kept]


def is_table(source: str) -> bool:
    """Whether `source` names a CSV or JSONL file (by its extension) rather than CLINC150."""
    return Path(source).suffix.lower() in TABLE_FORMATS


def load_data(
    source: str | None = None, oos_label: str = DEFAULT_OOS_LABEL, domains_file: Path | None = None
) -> ClincData:
    """CLINC150 (`load_clinc`) or a CSV / JSONL file of your own intents (`load_table`).

    `oos_label` names the out-of-scope label. A file without any oos rows still gets it as a class: the service
    falls back to it, and calibration then sets the oos rule on in-scope validation alone.
    `domains_file`: a `{domain: [intents]}` JSON for the fallback message (CLINC150 defaults to its domains.json;
    your own file to none, a generic message).
    """
    if not oos_label or not oos_label.strip():
        raise DataError("the oos label must not be empty (--oos-label)")
    source = source or default_data_source()
    data = (
        load_clinc(source, oos_label, domains_file)
        if not is_table(source)
        else _load_own(source, oos_label, domains_file)
    )
    for warning in data_warnings(data):
        logger.warning("%s: %s", source, warning)
    return data


def _load_own(source: str, oos_label: str, domains_file: Path | None) -> ClincData:
    """A CSV / JSONL file of your own intents; domains only from `domains_file`."""
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path} (pass --data PATH to a CSV or JSONL file)")
    train, val, test = load_table(path)
    labels = label_set(train, val, test, oos_label, source)
    domains = read_domains(domains_file, labels) if domains_file is not None else {}
    logger.info(
        "%s: %d train, %d validation, %d test, %d labels (oos label %r)",
        path,
        len(train),
        len(val),
        len(test),
        len(labels),
        oos_label,
    )
    return ClincData(train, val, test, labels, domains, source, oos_label)
