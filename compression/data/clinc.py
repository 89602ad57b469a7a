"""CLINC150 (Larson et al. 2019): the HF dataset `clinc_oos` (config `plus`) or a local oos-eval JSON file."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from app.decision import DEFAULT_OOS_LABEL
from compression.data.splits import ClincData, DataError, Split, read_domains

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCAL_CANDIDATES = (
    REPO_ROOT.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json",
    REPO_ROOT / "data" / "clinc150" / "data_oos_plus.json",
)
HF_DATASET = "clinc_oos"
HF_CONFIG = "plus"


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
