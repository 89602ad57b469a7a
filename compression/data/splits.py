"""The data every step reads: three splits of texts and label names, the label list and the domains."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from app.decision import DEFAULT_OOS_LABEL


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
