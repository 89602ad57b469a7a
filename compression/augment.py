"""Transfer-set augmentation for distillation: noisy copies of the train queries.

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
    seed: int = 0

    def __post_init__(self) -> None:
        if self.copies < 0:
            raise ValueError(f"augment copies must be >= 0, got {self.copies}")
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
