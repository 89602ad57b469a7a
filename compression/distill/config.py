"""The distillation settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compression.augment import AugmentConfig
from compression.config import FinetuneConfig


@dataclass
class DistillConfig(FinetuneConfig):
    """Student + KD hyperparameters; `student` is "layers:0,2,4" (teacher subset) or an HF id / dir."""

    teacher_dir: Path = Path("artifacts/teacher")
    # More teachers whose logits are averaged with the teacher's into the soft targets (an ensemble teaches
    # better than any of its members); the student is still built from `teacher_dir` for "layers:...".
    extra_teachers: tuple[Path, ...] = ()
    student: str = "layers:0,2,4"
    # For a base-model student (a name, HF id or folder): keep only these of its layers ("0,2,4"; "" = all).
    student_layers: str = ""
    output_dir: Path = Path("artifacts/student")
    name: str = "student"
    alpha: float = 0.5
    temperature: float = 2.0
    # Weight of a mean-squared error between raw logits (Ba & Caruana 2014). KL at any temperature ignores a
    # shift of all logits, but the energy / max-logit oos scores read their level: this term transfers it.
    logit_mse: float = 0.0
    # Weight of a hidden-state term: each student layer is pulled towards the output of the teacher layer whose
    # work it replaces (`teacher_layer_map`). Logits teach the output only; this also teaches the intermediate
    # representations. "cls": distance of the L2-normalised [CLS] states (Patient KD, Sun et al. 2019);
    # "tokens": MSE over every token's state (TinyBERT, Jiao et al. 2020), far more signal per query.
    hidden_weight: float = 0.0
    hidden_target: str = "cls"
    epochs: float = 8.0
    learning_rate: float = 2e-4
    batch_size: int = 32
    # Noisy copies of the train queries added to the transfer set, labelled by the teacher (TinyBERT-style).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Folder of teacher logits shared by runs with the same teachers and transfer set (compression.teacher_cache).
    logits_cache: Path | None = None
    extra_source: dict[str, Any] = field(default_factory=dict)
