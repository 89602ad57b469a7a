"""`build`: finetune -> export -> quantize -> calibrate -> evaluate (the full preset adds the student)."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from compression.commands import finetune as finetune_command
from compression.commands.common import add_quant_args, data_from_args, quant_settings
from compression.commands.distill import check_search, distill_student, output_dirs
from compression.commands.finish import finish_package
from compression.config import STUDENT_PRESETS

if TYPE_CHECKING:
    from compression.data import ClincData

logger = logging.getLogger("compression")

HELP = "finetune -> export -> quantize -> calibrate -> evaluate"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """finetune's options, the int8 options, and the student's."""
    finetune_command.add_arguments(p)
    add_quant_args(p)
    p.add_argument("--reuse", action="store_true", help="keep an existing trained package (skip finetune)")
    p.add_argument("--no-student", action="store_true", help="full preset: stop after the teacher")
    p.add_argument(
        "--student-trials", type=int, default=0, help="full preset: Optuna trials instead of the preset's recipe"
    )
    p.add_argument("--trial-fraction", type=float, default=0.5, help="share of the train split per Optuna trial")


def run(args: argparse.Namespace) -> int:
    """Run the whole chain for one preset (full adds the distilled student) and print the tables."""
    from compression.finetune import finetune
    from compression.packaging import OutputDirError, check_output_dir

    start = time.perf_counter()
    cfg = finetune_command.config_from_args(args)
    check_search(args.student_trials, args.trial_fraction)
    student = STUDENT_PRESETS.get(args.preset)
    check_output_dir(cfg.output_dir)  # before hours of training, not after
    if student and not args.no_student:
        for out in output_dirs(student_dir(Path(cfg.output_dir)), student.get("baseline", False)):
            if out.resolve() == Path(cfg.output_dir).resolve():  # the student would replace its own teacher
                raise OutputDirError(
                    f"--output-dir {cfg.output_dir} is where the {args.preset} preset writes its student ({out}); "
                    f"give the teacher another folder, e.g. {out.parent / 'teacher'}"
                )
            check_output_dir(out)
    data = data_from_args(args)
    if args.reuse and (Path(cfg.output_dir) / "model.safetensors").is_file():
        logger.info("reusing trained weights in %s", cfg.output_dir)
    else:
        finetune(cfg, data)
    finish_package(cfg.output_dir, data, num_threads=cfg.num_threads or 0, **quant_settings(args))
    built = [Path(cfg.output_dir)]
    if student and not args.no_student:
        built += build_student(Path(cfg.output_dir), student, args, data, cfg.num_threads)
    logger.info(
        "build (%s preset) finished in %.1f min: %s",
        args.preset,
        (time.perf_counter() - start) / 60,
        ", ".join(map(str, built)),
    )
    return 0


def student_dir(teacher_dir: Path) -> Path:
    """Where a preset's student goes: beside its teacher."""
    return teacher_dir.parent / "student"


def build_student(
    teacher_dir: Path, preset: dict, args: argparse.Namespace, data: ClincData, num_threads: int | None
) -> list[Path]:
    """The preset's distilled student (and its alpha=1 baseline) next to the teacher, finished."""
    from compression.distill import DistillConfig

    recipe = {k: v for k, v in preset.items() if k not in ("baseline", "embedding_bits")}
    cfg = DistillConfig(
        teacher_dir=teacher_dir,
        output_dir=student_dir(teacher_dir),
        name="student",
        num_threads=num_threads,
        **recipe,
    )
    packages = distill_student(cfg, data, args.student_trials, args.trial_fraction, preset.get("baseline", False))
    quant = quant_settings(args)
    if args.embedding_bits is None:  # an explicit --embedding-bits wins over the preset's
        quant["embedding_bits"] = preset.get("embedding_bits", quant["embedding_bits"])
    for package in packages:
        finish_package(package, data, num_threads=num_threads or 0, **quant)
    return packages
