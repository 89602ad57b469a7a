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
    student: str = "layers:0,2,4"
    # For a base-model student (a name, HF id or folder): keep only these of its layers ("0,2,4"; "" = all).
    student_layers: str = ""
    output_dir: Path = Path("artifacts/student")
    name: str = "student"
    alpha: float = 0.5
    temperature: float = 2.0
    epochs: float = 8.0
    learning_rate: float = 2e-4
    batch_size: int = 32
    # Noisy copies of the train queries added to the transfer set, labelled by the teacher (TinyBERT-style).
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # Folder of teacher logits shared by runs with the same teachers and transfer set (compression.teacher_cache).
    logits_cache: Path | None = None
    extra_source: dict[str, Any] = field(default_factory=dict)
