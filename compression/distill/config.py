"""The distillation settings."""

from __future__ import annotations

import json
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

    def validate(self) -> None:
        """FinetuneConfig's checks, the KD weights, and a "layers:" student against the teacher's depth."""
        super().validate()
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(
                f"--alpha weighs the label loss against the teacher's: it must be in [0, 1], got {self.alpha}"
            )
        if not self.temperature > 0:
            raise ValueError(f"--temperature must be > 0, got {self.temperature}")
        from compression.distill.students import parse_layers

        if self.student_layers and self.student.startswith("layers:"):  # would be ignored: the spec names the layers
            raise ValueError(
                f"--student-layers picks layers of a base-model --student; with --student {self.student} the "
                "layers are already named there"
            )
        specs = {"--student-layers": self.student_layers}
        if self.student.startswith("layers:"):
            specs["--student"] = self.student.removeprefix("layers:")
        for flag, spec in specs.items():
            layers = parse_layers(spec)
            if len(set(layers)) != len(layers) or any(i < 0 for i in layers) or (flag == "--student" and not layers):
                raise ValueError(f"{flag} {spec!r}: give distinct layer indices, e.g. 0,2,4")
        config = Path(self.teacher_dir) / "config.json"
        if self.student.startswith("layers:") and config.is_file():
            depth = json.loads(config.read_text()).get("num_hidden_layers")
            beyond = [i for i in parse_layers(self.student.removeprefix("layers:")) if depth is not None and i >= depth]
            if beyond:
                raise ValueError(f"--student {self.student}: the teacher {self.teacher_dir} has layers 0-{depth - 1}")
