"""The distillation losses: soft targets (Hinton et al. 2015), raw-logit MSE and hidden-state terms."""

from __future__ import annotations

from typing import Any


def distillation_loss(
    student_logits: Any, teacher_logits: Any, labels: Any, alpha: float, temperature: float, logit_mse: float = 0.0
) -> Any:
    """alpha * CE + (1 - alpha) * T^2 * KL(softmax(teacher/T) || softmax(student/T)) + logit_mse * MSE(logits)."""
    import torch.nn.functional as F  # noqa: N812

    ce = F.cross_entropy(student_logits, labels)
    if alpha >= 1.0:
        return ce
    kl = F.kl_div(
        F.log_softmax(student_logits / temperature, dim=-1),
        F.softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
    )
    loss = alpha * ce + (1.0 - alpha) * temperature**2 * kl
    if logit_mse:
        loss = loss + logit_mse * F.mse_loss(student_logits, teacher_logits)
    return loss


def pkd_loss(student_cls: Any, teacher_cls: Any) -> Any:
    """Mean over examples and layers of the squared distance between L2-normalised [CLS] states (rows, layers, H)."""
    import torch.nn.functional as F  # noqa: N812

    diff = F.normalize(student_cls, dim=-1) - F.normalize(teacher_cls, dim=-1)
    return diff.pow(2).sum(-1).mean()


def token_mse_loss(student: Any, teacher: Any, mask: Any) -> Any:
    """MSE between hidden states (rows, tokens, layers, H) over the real tokens only (mask: rows, tokens)."""
    keep = mask.bool()
    return (student[keep] - teacher[keep]).pow(2).mean()


def kd_loss(
    student_logits: Any,
    teacher_logits: Any | None,
    labels: Any,
    alpha: float,
    temperature: float,
    logit_mse: float = 0.0,
) -> Any:
    """`distillation_loss` when the batch carries the teacher's logits, plain cross-entropy when it has none."""
    import torch.nn.functional as F  # noqa: N812

    if teacher_logits is None:
        return F.cross_entropy(student_logits, labels)
    teacher = teacher_logits.to(student_logits.dtype)
    return distillation_loss(student_logits, teacher, labels, alpha, temperature, logit_mse)
