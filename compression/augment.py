"""Transfer-set augmentation for distillation: noisy copies and crossovers of the train queries.

The teacher labels every generated query; the student learns its answers where the train split has none.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentConfig:
    """Noisy copies per train query; each word is dropped, replaced or swapped (EDA, Wei & Zou 2019)."""

    copies: int = 0
    p_delete: float = 0.1
    # Replacement words come from the train split's own vocabulary (no WordNet offline); the teacher relabels
    # every copy, so a replacement that changes the intent teaches the student the teacher's answer to it.
    p_replace: float = 0.1
    p_swap: float = 0.1
    # Crossovers: the head of one query + the tail of another intent's query ("what is the apr on my
    # mastercard" + "... to pay my gas bill"). Near the intents but often none of them: trained students
    # agree with the teacher's decision on only 80-89% of such queries (docs/experiments.md).
    crossovers: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ValueError(f"augment copies must be >= 0, got {self.copies}")
        if self.crossovers < 0:
            raise ValueError(f"augment crossovers must be >= 0, got {self.crossovers}")
        probs = {"p_delete": self.p_delete, "p_replace": self.p_replace, "p_swap": self.p_swap}
        bad = {k: v for k, v in probs.items() if not 0.0 <= v < 1.0}
        if bad:
            raise ValueError(f"augment probabilities must be in [0, 1): {bad}")
        if self.p_delete + self.p_replace >= 1.0:
            raise ValueError("p_delete + p_replace must be < 1 (each word is kept with the remaining probability)")
        if self.copies and not any(probs.values()):
            raise ValueError("augment copies > 0 need at least one non-zero probability")


def perturb(words: list[str], vocab: list[str], cfg: AugmentConfig, rng: random.Random) -> list[str]:
    """One noisy copy of a word list: per-word delete / replace, then adjacent swaps."""
    out: list[str] = []
    for word in words:
        r = rng.random()
        if r < cfg.p_delete:
            continue
        out.append(rng.choice(vocab) if r < cfg.p_delete + cfg.p_replace else word)
    for i in range(len(out) - 1):
        if rng.random() < cfg.p_swap:
            out[i], out[i + 1] = out[i + 1], out[i]
    return out


def augment(texts: list[str], cfg: AugmentConfig, max_attempts: int = 10) -> list[str]:
    """Up to cfg.copies distinct noisy variants of each text, none equal to any source text; reproducible."""
    rng = random.Random(cfg.seed)
    vocab = sorted({w for text in texts for w in text.split()})
    sources = set(texts)
    out: list[str] = []
    for text in texts:
        words = text.split()
        seen: set[str] = set()
        for _ in range(cfg.copies):
            for _attempt in range(max_attempts):
                candidate = " ".join(perturb(words, vocab, cfg, rng))
                if candidate and candidate not in sources and candidate not in seen:
                    seen.add(candidate)
                    out.append(candidate)
                    break
    return out


def crossover(texts: list[str], labels: list[str], n: int, seed: int = 0, max_attempts_factor: int = 20) -> list[str]:
    """n distinct queries, each the head of one text + the tail of a text with another label; reproducible."""
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    rng = random.Random(seed)
    words = [text.split() for text in texts]
    usable = [i for i, w in enumerate(words) if len(w) >= 2]  # both parts need at least one word
    if n and len({labels[i] for i in usable}) < 2:
        raise ValueError("crossovers need texts of two words or more under at least two different labels")
    sources = set(texts)
    out: dict[str, None] = {}  # insertion-ordered set: reproducible order
    for _ in range(n * max_attempts_factor):
        if len(out) >= n:
            break
        i, j = rng.choice(usable), rng.choice(usable)
        if labels[i] == labels[j]:
            continue
        head, tail = words[i], words[j]
        candidate = " ".join(head[: rng.randint(1, len(head) - 1)] + tail[rng.randint(1, len(tail) - 1) :])
        if candidate not in sources:
            out[candidate] = None
    return list(out)
