"""Training data: CLINC150 (HF dataset `clinc_oos`, config `plus`, or a local oos-eval JSON) or your own intents.

Your own intents come as a CSV or JSONL file with `text` and `label` columns and an optional `split` column
(train, validation or val, test); see `load_table` for the split made when there is none.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from app.decision import DEFAULT_OOS_LABEL

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json",
    REPO_ROOT / "data" / "clinc150" / "data_oos_plus.json",
)
HF_DATASET = "clinc_oos"
HF_CONFIG = "plus"
TABLE_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
SPLIT_NAMES = {"train": "train", "validation": "validation", "val": "validation", "test": "test"}
SPLIT_SEED = 0


class DataError(ValueError):
    """A data file that cannot be used, with one actionable line saying why."""


@dataclass
class Split:
    """Texts and their label names."""

    texts: list[str]
    labels: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, n: int, seed: int = 0) -> Split:
        """A reproducible random subset of at most n examples."""
        idx = list(range(len(self)))
        random.Random(seed).shuffle(idx)
        idx = sorted(idx[:n])
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx])


@dataclass
class ClincData:
    """The three splits, the label list (sorted, the oos label included) and the domains."""

    train: Split
    validation: Split
    test: Split
    labels: list[str]
    domains: dict[str, list[str]]
    source: str
    oos_label: str = DEFAULT_OOS_LABEL


def default_data_source() -> str:
    """The local JSON when present (offline machines), else the HF dataset name."""
    for candidate in LOCAL_CANDIDATES:
        if candidate.is_file():
            return str(candidate)
    return HF_DATASET


def _load_local(path: Path) -> tuple[Split, Split, Split]:
    raw = json.loads(path.read_text())
    own = "; for your own intents use a .csv or .jsonl file of text,label"
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not an oos-eval CLINC150 file (not a JSON object){own}")
    missing = {"train", "val", "test", "oos_train", "oos_val", "oos_test"} - set(raw)
    if missing:
        raise ValueError(f"{path} is not an oos-eval CLINC150 file: missing keys {sorted(missing)}{own}")

    def split(*keys: str) -> Split:
        rows = [row for key in keys for row in raw[key]]
        return Split([r[0] for r in rows], [r[1] for r in rows])

    return split("train", "oos_train"), split("val", "oos_val"), split("test", "oos_test")


def _load_hf(name: str) -> tuple[Split, Split, Split]:
    from datasets import load_dataset

    ds = load_dataset(name, HF_CONFIG)
    names = ds["train"].features["intent"].names  # label names, not ids, are the truth

    def split(key: str) -> Split:
        return Split(list(ds[key]["text"]), [names[i] for i in ds[key]["intent"]])

    return split("train"), split("validation"), split("test")


def load_domains(data_path: Path | None) -> dict[str, list[str]]:
    """domain -> intents from domains.json next to the data file, if any."""
    if data_path is not None:
        candidate = data_path.parent / "domains.json"
        if candidate.is_file():
            return json.loads(candidate.read_text())
    for candidate in LOCAL_CANDIDATES:
        if (candidate.parent / "domains.json").is_file():
            return json.loads((candidate.parent / "domains.json").read_text())
    logger.warning("domains.json not found; the oos fallback message will list no domains")
    return {}


def read_domains(path: Path, labels: list[str]) -> dict[str, list[str]]:
    """A `{domain: [intents]}` JSON file (like CLINC150's domains.json), checked against the data's labels."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the domains file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}); expected {{domain: [intents]}}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and k and isinstance(v, list) and all(isinstance(i, str) for i in v) for k, v in raw.items()
    ):
        raise DataError(f'{path} must map each domain to a list of intents, e.g. {{"banking": ["balance"]}}')
    unknown = sorted({intent for intents in raw.values() for intent in intents} - set(labels))
    if unknown:
        raise DataError(f"{path} lists intents that are not labels of the data: {', '.join(unknown[:5])}")
    return raw


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
            raise DataError(
                f"{path} has no {field!r} column (header: {', '.join(header)}); name the columns text,label"
            )
    for row in reader:
        if row:  # blank lines
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
        return stratified_split(texts, labels, seed)
    parts = []
    for name in ("train", "validation", "test"):
        idx = [i for i, s in enumerate(splits) if s == name]
        if not idx:
            raise DataError(f"{path}: the {name} split has no rows; give it some or drop the split column")
        parts.append(Split([texts[i] for i in idx], [labels[i] for i in idx]))
    return parts[0], parts[1], parts[2]


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
    if not is_table(source):
        return load_clinc(source, oos_label, domains_file)
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path} (pass --data PATH to a CSV or JSONL file)")
    train, val, test = load_table(path)
    labels = sorted(set(train.labels) | {oos_label})
    unknown = (set(val.labels) | set(test.labels)) - set(labels)
    if unknown:
        raise DataError(f"{path}: labels in validation/test but not in train: {', '.join(sorted(unknown)[:5])}")
    if len(labels) < 2:
        raise DataError(f"{path}: every row is {oos_label!r}; the data needs at least one in-scope intent")
    if oos_label not in train.labels + val.labels + test.labels:
        logger.warning(
            "%s has no %r rows: the model gets an %r class that no example targets, and the oos rule is "
            "calibrated on in-scope validation queries alone (pass --oos-label if your oos rows use another label)",
            path,
            oos_label,
            oos_label,
        )
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


def load_clinc(
    source: str | None = None, oos_label: str = DEFAULT_OOS_LABEL, domains_file: Path | None = None
) -> ClincData:
    """Load CLINC150 `plus` from a local JSON path or an HF dataset name."""
    source = source or default_data_source()
    path = Path(source)
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise FileNotFoundError(f"data file not found: {path} (pass --data PATH or an HF dataset name)")
        if path.suffix.lower() != ".json":
            raise DataError(
                f"unknown data file extension {path.suffix!r} ({path}); use .csv or .jsonl, or a CLINC150 .json"
            )
        train, val, test = _load_local(path)
        domains = load_domains(path) if domains_file is None else {}
    else:
        train, val, test = _load_hf(source)
        domains = load_domains(None) if domains_file is None else {}
    labels = sorted(set(train.labels))
    unknown = (set(val.labels) | set(test.labels)) - set(labels)
    if unknown:
        raise ValueError(f"labels in val/test but not in train: {sorted(unknown)[:5]}")
    if oos_label not in labels:
        raise ValueError(f"the data has no {oos_label!r} label; use the `plus` config (data_oos_plus.json)")
    if domains_file is not None:
        domains = read_domains(domains_file, labels)
    logger.info(
        "CLINC150 from %s: %d train, %d val, %d test, %d labels",
        source,
        len(train),
        len(val),
        len(test),
        len(labels),
    )
    return ClincData(train, val, test, labels, domains, source, oos_label)
