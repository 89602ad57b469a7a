"""The student: a subset of the teacher's layers or another encoder, checked against the teacher's tokenizer."""

from __future__ import annotations

from typing import Any

from compression.distill.config import DistillConfig
from compression.finetune import load_classifier


def subset_layers(student: str) -> list[int] | None:
    """The teacher layer indices of a "layers:i,j,k" student spec, or None for an HF id / dir."""
    if not student.startswith("layers:"):
        return None
    return [int(x) for x in student.removeprefix("layers:").split(",") if x.strip()]


def student_from_teacher_layers(teacher: Any, layers: list[int]) -> Any:
    """A student with the teacher's embeddings, pooler, head and a subset of its encoder layers."""
    import copy

    n = teacher.config.num_hidden_layers
    if not layers or any(i < 0 or i >= n for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"layers {layers} must be distinct indices of the teacher's {n} layers")
    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(layers)
    student = type(teacher)(config)
    state = teacher.state_dict()
    mapped = {}
    for key, value in state.items():
        if ".encoder.layer." in key:
            prefix, rest = key.split(".encoder.layer.", 1)
            idx, tail = rest.split(".", 1)
            if int(idx) not in layers:
                continue
            key = f"{prefix}.encoder.layer.{layers.index(int(idx))}.{tail}"
        mapped[key] = value.clone()
    missing, unexpected = student.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"layer-subset init mismatch: missing {missing[:3]}, unexpected {unexpected[:3]}")
    return student


def check_same_tokenizer(teacher_tok: Any, student_tok: Any, student_id: str) -> None:
    """Refuse a student whose vocabulary or casing differs: teacher logits would be about other tokens."""
    if teacher_tok.get_vocab() != student_tok.get_vocab():
        raise ValueError(
            f"student {student_id!r} has a different tokenizer vocabulary than the teacher; "
            "distillation needs the same tokenizer (pick a student of the same family, or use layers:...)"
        )
    lower = [
        getattr(t, "do_lower_case", None) or t.init_kwargs.get("do_lower_case") for t in (teacher_tok, student_tok)
    ]
    if lower[0] != lower[1]:
        raise ValueError(f"student {student_id!r} lowercases differently (do_lower_case {lower[1]} vs {lower[0]})")


def parse_layers(spec: str) -> list[int]:
    """ "0,2,4" -> [0, 2, 4]; a clear error for anything else."""
    try:
        return [int(x) for x in spec.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"student layers {spec!r} must be comma-separated layer indices, e.g. 0,2,4") from None


def student_tokenizer(cfg: DistillConfig, teacher_tok: Any) -> Any:
    """The tokenizer the student reads: the teacher's for "layers:...", else the student base model's own."""
    if subset_layers(cfg.student) is not None:
        return teacher_tok
    from transformers import AutoTokenizer

    from compression.base_models import resolve_base_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model(cfg.student))
    if not tokenizer.is_fast:
        raise ValueError(f"student {cfg.student!r} has no fast tokenizer (tokenizer.json); the service needs one")
    return tokenizer


def make_student(cfg: DistillConfig, teacher: Any, tokenizer: Any, labels: list[str]) -> Any:
    """Build the student model from `cfg.student` (and `cfg.student_layers`); `tokenizer` is the student's."""
    layers = subset_layers(cfg.student)
    if layers is not None:
        return student_from_teacher_layers(teacher, layers)
    check_label_order(cfg.student, labels)
    own_tok, student = load_classifier(cfg.student, labels)
    # The transfer set was encoded with `tokenizer`: the student must read the same token ids.
    check_same_tokenizer(tokenizer, own_tok, cfg.student)
    if cfg.student_layers:
        student = student_from_teacher_layers(student, parse_layers(cfg.student_layers))
    return student


def student_config(student_id: str) -> Any:
    """The transformers config of a base-model or package student (an HF id, a known name or a folder)."""
    from transformers import AutoConfig

    from compression.base_models import resolve_base_model

    return AutoConfig.from_pretrained(resolve_base_model(student_id))


def check_student_layers(cfg: DistillConfig) -> None:
    """Refuse --student-layers beyond the base-model student's depth now, not after the teacher's pass."""
    if not cfg.student_layers or subset_layers(cfg.student) is not None:
        return
    depth = student_config(cfg.student).num_hidden_layers
    beyond = [i for i in parse_layers(cfg.student_layers) if i >= depth]
    if beyond:
        raise ValueError(f"--student-layers {cfg.student_layers}: the student {cfg.student} has layers 0-{depth - 1}")


def check_label_order(student_id: str, labels: list[str]) -> None:
    """Refuse a trained student (local package or HF id) whose head rows are the teacher's labels reordered."""
    id2label = student_config(student_id).id2label
    own = [id2label[i] for i in range(len(id2label))]
    if sorted(own) == sorted(labels) and own != labels:
        raise ValueError(
            f"student {student_id!r} has the teacher's labels in another order; its classifier rows would be "
            "read against the wrong soft targets (re-save it with the teacher's label order)"
        )
