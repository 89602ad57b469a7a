"""The data every step reads: three splits of texts and label names, the label list and the domains."""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from app.decision import DEFAULT_OOS_LABEL

logger = logging.getLogger(__name__)


class DataError(ValueError):
    """A data file that cannot be used, with one actionable line saying why."""


class DomainsError(DataError):
    """A domains file (--domains) that cannot be read or does not fit the data."""


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
        raise DomainsError(f"cannot read the domains file {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DomainsError(f"{path} is not valid JSON ({exc}); expected {{domain: [intents]}}") from None
    if not isinstance(raw, dict) or not all(
        isinstance(k, str) and k and isinstance(v, list) and all(isinstance(i, str) for i in v) for k, v in raw.items()
    ):
        raise DomainsError(f'{path} must map each domain to a list of intents, e.g. {{"banking": ["balance"]}}')
    unknown = sorted({intent for intents in raw.values() for intent in intents} - set(labels))
    if unknown:
        raise DomainsError(f"{path} lists intents that are not labels of the data: {', '.join(unknown[:5])}")
    return raw


def label_set(train: Split, validation: Split, test: Split, oos_label: str, source: str) -> list[str]:
    """The labels (train's, and the oos label always), or DataError; warns when no row is out of scope.

    A file without oos rows still gets the oos label as a class: the service falls back to it, and calibration
    then sets the oos rule on in-scope validation alone.
    """
    labels = sorted(set(train.labels) | {oos_label})
    unknown = (set(validation.labels) | set(test.labels)) - set(labels)
    if unknown:
        raise DataError(f"{source}: labels in validation/test but not in train: {', '.join(sorted(unknown)[:5])}")
    if len(labels) < 2:
        raise DataError(f"{source}: every row is {oos_label!r}; the data needs at least one in-scope intent")
    if oos_label not in train.labels + validation.labels + test.labels:
        logger.warning(
            "%s has no %r rows: the model gets an %r class that no example targets, and the oos rule is "
            "calibrated on in-scope validation queries alone (pass --oos-label if your oos rows use another label)",
            source,
            oos_label,
            oos_label,
        )
    return labels


def same_text(text: str) -> str:
    """The key under which two texts count as the same: case and runs of whitespace ignored."""
    return " ".join(text.casefold().split())


def data_warnings(data: ClincData, overlap_share: float = 0.01) -> list[str]:
    """What in the data makes a model or its figures misleading: contradictory labels, test texts seen in training
    (beyond `overlap_share` of a split: CLINC150 itself has 3 and 2), labels that differ only in case."""
    warnings = []
    first: dict[str, str] = {}
    conflicts = []
    for split in (data.train, data.validation, data.test):
        for text, label in zip(split.texts, split.labels, strict=True):
            seen = first.setdefault(same_text(text), label)
            if seen != label:
                conflicts.append((text, seen, label))
    if conflicts:
        text, a, b = conflicts[0]
        warnings.append(
            f"{len(conflicts)} row(s) repeat a text with another label, e.g. {text!r} as {a!r} and {b!r}: "
            "the model cannot learn both, and the figures count one of them wrong"
        )
    trained = {same_text(text) for text in data.train.texts}
    for name, split in (("validation", data.validation), ("test", data.test)):
        seen_in_train = sum(same_text(text) in trained for text in split.texts)
        if seen_in_train > overlap_share * len(split):
            warnings.append(
                f"{seen_in_train} of {len(split)} {name} texts also appear in train: {name} figures will be optimistic"
            )
    by_case: dict[str, list[str]] = {}
    for label in data.labels:
        by_case.setdefault(label.casefold(), []).append(label)
    clashes = [labels for labels in by_case.values() if len(labels) > 1]
    if clashes:
        named = ", ".join(" / ".join(repr(label) for label in labels) for labels in clashes[:3])
        oos = f"; only {data.oos_label!r} is out of scope" if any(data.oos_label in c for c in clashes) else ""
        warnings.append(f"labels that differ only in case are different intents: {named}{oos}")
    return warnings
