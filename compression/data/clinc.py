"""CLINC150 (Larson et al. 2019): the HF dataset `clinc_oos` (config `plus`) or a local oos-eval JSON file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.decision import DEFAULT_OOS_LABEL
from compression.data.splits import ClincData, DataError, Split, label_set, read_domains

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json",
    REPO_ROOT / "data" / "clinc150" / "data_oos_plus.json",
)
HF_DATASET = "clinc_oos"
HF_CONFIG = "plus"
# The names CLINC150 is recorded under in a package's manifest (source.dataset).
CLINC_NAMES = {*(c.name for c in LOCAL_CANDIDATES), HF_DATASET}


def default_data_source() -> str:
    """The local JSON when present (offline machines), else the HF dataset name."""
    for candidate in LOCAL_CANDIDATES:
        if candidate.is_file():
            return str(candidate)
    return HF_DATASET


def _load_local(path: Path) -> tuple[Split, Split, Split, set[str]]:
    """The three splits of an oos-eval file, and the labels of its oos_* rows."""
    own = "; for your own intents use a .csv or .jsonl file of text,label"
    try:
        raw = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise DataError(f"cannot read {path}: it is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{path} is not valid JSON ({exc}){own}") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not an oos-eval CLINC150 file (not a JSON object){own}")
    missing = {"train", "val", "test", "oos_train", "oos_val", "oos_test"} - set(raw)
    if missing:
        raise DataError(f"{path} is not an oos-eval CLINC150 file: missing keys {sorted(missing)}{own}")
    for key in ("train", "val", "test", "oos_train", "oos_val", "oos_test"):
        rows = raw[key]
        bad = next(
            (
                i
                for i, row in enumerate(rows if isinstance(rows, list) else [None])
                if not (isinstance(row, list) and len(row) == 2 and all(isinstance(v, str) and v.strip() for v in row))
            ),
            None,
        )
        if bad is not None:
            found = json.dumps(rows[bad] if isinstance(rows, list) else rows)[:80]
            raise DataError(
                f'{path}: {key}[{bad}] is {found}; each row of an oos-eval file is a ["text", "label"] pair{own}'
            )

    def split(*keys: str) -> Split:
        rows = [row for key in keys for row in raw[key]]
        return Split([r[0] for r in rows], [r[1] for r in rows])

    oos_labels = {row[1] for key in ("oos_train", "oos_val", "oos_test") for row in raw[key]}
    return split("train", "oos_train"), split("val", "oos_val"), split("test", "oos_test"), oos_labels


def _load_hf(name: str) -> tuple[Split, Split, Split]:
    from datasets import load_dataset

    ds = load_dataset(name, HF_CONFIG)
    names = ds["train"].features["intent"].names  # label names, not ids, are the truth

    def split(key: str) -> Split:
        return Split(list(ds[key]["text"]), [names[i] for i in ds[key]["intent"]])

    return split("train"), split("validation"), split("test")


def load_domains(data_path: Path | None, labels: list[str]) -> dict[str, list[str]]:
    """domain -> intents from the domains.json next to the data file (for the HF dataset: the local CLINC150 copy's).

    Found, not asked for: a file that names intents the data does not have (another dataset's) is not used.
    """
    folders = [data_path.parent] if data_path is not None else [c.parent for c in LOCAL_CANDIDATES]
    for candidate in (folder / "domains.json" for folder in folders):
        if candidate.is_file():
            try:
                return read_domains(candidate, labels)
            except DataError as exc:
                logger.warning("%s; the oos fallback message will list no domains (pass --domains FILE)", exc)
                return {}
    logger.warning("domains.json not found; the oos fallback message will list no domains")
    return {}


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
        train, val, test, oos_rows = _load_local(path)
    else:
        path, oos_rows = None, set()
        train, val, test = _load_hf(source)
    if oos_label not in train.labels + val.labels + test.labels and (path is None or oos_rows):
        # The HF dataset, or a file whose oos_* rows carry another label: a mistaken --oos-label, not data without oos.
        found = f"its oos_* rows are labelled {sorted(oos_rows)[0]!r}" if oos_rows else "use the `plus` config"
        raise DataError(f"{source} has no {oos_label!r} rows; {found} (--oos-label names the out-of-scope label)")
    labels = label_set(train, val, test, oos_label, source)
    domains = read_domains(domains_file, labels) if domains_file is not None else load_domains(path, labels)
    logger.info(
        "CLINC150 from %s: %d train, %d val, %d test, %d labels",
        source,
        len(train),
        len(val),
        len(test),
        len(labels),
    )
    return ClincData(train, val, test, labels, domains, source, oos_label)
