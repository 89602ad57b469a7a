"""Knowledge distillation of a teacher package into a smaller student (Hinton et al. 2015, DistilBERT init).

`config` holds the settings, `students` builds the student, `teacher` computes the soft targets, `transfer`
assembles the transfer set, `loss` and `trainer` are the KD loss and the Trainer that applies it (pruning's
recovery training uses the same one), and `run` ties them together.
"""

from compression.distill.config import DistillConfig
from compression.distill.loss import distillation_loss, kd_loss
from compression.distill.run import accuracy, distill, train_student
from compression.distill.students import (
    check_label_order,
    check_same_tokenizer,
    make_student,
    parse_layers,
    student_from_teacher_layers,
    student_tokenizer,
    subset_layers,
)
from compression.distill.teacher import DistillSplit, load_teacher, teacher_logits
from compression.distill.transfer import logits_note, needs_teacher_pass, prepare, reads_soft_targets

__all__ = [
    "DistillConfig",
    "DistillSplit",
    "accuracy",
    "check_label_order",
    "check_same_tokenizer",
    "distill",
    "distillation_loss",
    "kd_loss",
    "load_teacher",
    "logits_note",
    "make_student",
    "needs_teacher_pass",
    "parse_layers",
    "prepare",
    "reads_soft_targets",
    "student_from_teacher_layers",
    "student_tokenizer",
    "subset_layers",
    "teacher_logits",
    "train_student",
]
