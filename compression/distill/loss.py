"""The distillation loss: hard labels plus the teacher's soft targets (Hinton et al. 2015)."""

from __future__ import annotations

from typing import Any


def distillation_loss(student_logits: Any, teacher_logits: Any, labels: Any, alpha: float, temperature: float) -> Any:
    """alpha * CE + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T))."""
    import torch.nn.functional as F  # noqa: N812

    ce = F.cross_entropy(student_logits, labels)
    if alpha >= 1.0:
        return ce
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    return alpha * ce + (1.0 - alpha) * temperature**2 * kl


def kd_loss(student_logits: Any, teacher_logits: Any | None, labels: Any, alpha: float, temperature: float) -> Any:
    """`distillation_loss` when the batch carries the teacher's logits, plain cross-entropy when it has none."""
    import torch.nn.functional as F  # noqa: N812

    if teacher_logits is None:
        return F.cross_entropy(student_logits, labels)
    teacher = teacher_logits.to(student_logits.dtype)
    return distillation_loss(student_logits, teacher, labels, alpha, temperature)
