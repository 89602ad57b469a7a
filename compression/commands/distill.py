"""`distill`: distill a teacher package into a student (KD, optional Optuna search), then finish it."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from compression.commands.common import UsageError, add_quant_args, data_from_args, quant_settings

if TYPE_CHECKING:
    from compression.data import ClincData
    from compression.distill import DistillConfig

logger = logging.getLogger("compression")

HELP = "distill a teacher package into a student (KD, optional Optuna search)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The student, the loss, the transfer set and the run; defaults from DistillConfig and AugmentConfig."""
    _add_model_args(p)
    _add_loss_args(p)
    _add_augment_args(p)
    _add_run_args(p)
    add_quant_args(p)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from compression.distill import DistillConfig as Cfg

    p.add_argument("--teacher", type=Path, default=Cfg.teacher_dir, help="teacher package")
    p.add_argument(
        "--student",
        default=Cfg.student,
        help='"layers:i,j,k" of the teacher, or a base model (all-MiniLM-L6-v2, an HF id or a folder) read with '
        "its own tokenizer",
    )
    p.add_argument(
        "--student-layers",
        default=Cfg.student_layers,
        help='with a base-model --student: keep only these of its layers ("0,2,4")',
    )
    p.add_argument("--output-dir", type=Path, default=Cfg.output_dir)
    p.add_argument("--name", default=Cfg.name)


def _add_loss_args(p: argparse.ArgumentParser) -> None:
    from compression.distill import DistillConfig as Cfg

    p.add_argument("--alpha", type=float, default=Cfg.alpha, help="weight of the hard-label cross-entropy")
    p.add_argument("--temperature", type=float, default=Cfg.temperature)
    p.add_argument("--epochs", type=float, default=Cfg.epochs)
    p.add_argument("--learning-rate", type=float, default=Cfg.learning_rate)
    p.add_argument("--batch-size", type=int, default=Cfg.batch_size)


def _add_augment_args(p: argparse.ArgumentParser) -> None:
    from compression.augment import AugmentConfig as Aug

    p.add_argument(
        "--augment-copies",
        type=int,
        default=Aug.copies,
        help="noisy copies of each train query added to the transfer set, labelled by the teacher (0 = none)",
    )
    p.add_argument(
        "--augment-prob",
        type=float,
        default=Aug.p_delete,
        help="per-word probability of each edit: delete, replace, swap",
    )


def _add_run_args(p: argparse.ArgumentParser) -> None:
    from compression.distill import DistillConfig as Cfg
    from compression.search import SearchConfig

    p.add_argument("--bf16", action="store_true", help="bf16 autocast in training (measure its accuracy first)")
    p.add_argument("--trials", type=int, default=0, help="Optuna trials before the final run (0 = no search)")
    p.add_argument(
        "--trial-fraction", type=float, default=SearchConfig.train_fraction, help="share of the train split per trial"
    )
    p.add_argument("--baseline", action="store_true", help="also train the same student with alpha=1 (no teacher)")
    p.add_argument("--no-finish", action="store_true", help="train and save only (no export/quantize/evaluate)")
    p.add_argument(
        "--logits-cache",
        type=Path,
        default=Cfg.logits_cache,
        help="folder of teacher logits keyed by the teachers' files, max length and texts: runs that share a "
        "teacher and transfer set compute them once (default: no cache)",
    )
    p.add_argument("--num-threads", type=int, default=Cfg.num_threads)
    p.add_argument("--seed", type=int, default=Cfg.seed)


def check_search(trials: int, trial_fraction: float) -> None:
    """A usage error for an Optuna search that cannot mean anything."""
    if trials < 0:
        raise UsageError(f"--trials must be at least 0 (0 = no search), got {trials}")
    if not 0.0 < trial_fraction <= 1.0:
        raise UsageError(f"--trial-fraction is a share of the train split in (0, 1], got {trial_fraction}")


def config_from_args(args: argparse.Namespace) -> DistillConfig:
    """The DistillConfig the options describe; out-of-range settings (augmentation, KD, layers) are usage errors."""
    from compression.augment import AugmentConfig
    from compression.distill import DistillConfig

    if args.augment_copies < 0 or not 0.0 <= args.augment_prob < 0.5:
        raise UsageError("--augment-copies must be >= 0 and --augment-prob in [0, 0.5)")
    check_search(getattr(args, "trials", 0), args.trial_fraction)
    augment = AugmentConfig(
        copies=args.augment_copies,
        p_delete=args.augment_prob,
        p_replace=args.augment_prob,
        p_swap=args.augment_prob,
        seed=args.seed,
    )
    cfg = DistillConfig(
        teacher_dir=args.teacher,
        student=args.student,
        student_layers=args.student_layers,
        output_dir=args.output_dir,
        name=args.name,
        alpha=args.alpha,
        temperature=args.temperature,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        num_threads=args.num_threads,
        seed=args.seed,
        bf16=args.bf16,
        logits_cache=args.logits_cache,
        augment=augment,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return cfg


def run(args: argparse.Namespace) -> int:
    """Distill (after an optional search), then finish each package unless --no-finish."""
    from compression.commands.finish import finish_package
    from compression.packaging import check_output_dir

    cfg = config_from_args(args)
    for out in output_dirs(cfg.output_dir, args.baseline):
        check_output_dir(out, cfg.teacher_dir)  # before hours of training, not after; never over the teacher
    data = data_from_args(args, cfg.teacher_dir)
    for package in distill_student(cfg, data, args.trials, args.trial_fraction, args.baseline):
        if not args.no_finish:
            finish_package(package, data, num_threads=args.num_threads or 0, **quant_settings(args))
    return 0


def output_dirs(output_dir: Path, baseline: bool) -> list[Path]:
    """The student's package folder, and its alpha = 1 twin's (`<output>-nokd`) with a baseline."""
    return [Path(output_dir), *([Path(f"{output_dir}-nokd")] if baseline else [])]


def distill_student(
    cfg: DistillConfig, data: ClincData, trials: int, trial_fraction: float, baseline: bool
) -> list[Path]:
    """Optional Optuna search, then the final student (and the alpha=1 baseline when asked)."""
    from dataclasses import replace

    from compression.distill import distill, prepare
    from compression.search import SearchConfig, search

    prepared = prepare(cfg, data, teacher_pass=trials > 0)  # the search tries alpha < 1 whatever cfg's alpha
    if trials > 0:
        found = search(cfg, SearchConfig(n_trials=trials, train_fraction=trial_fraction), data, prepared)
        best = found["best_params"]
        cfg = replace(
            cfg,
            alpha=best["alpha"],
            temperature=best["temperature"],
            epochs=float(best["epochs"]),
            learning_rate=best["learning_rate"],
            extra_source={"optuna": found},
        )
        logger.info("Optuna best %s (validation accuracy %.4f)", best, found["best_validation_accuracy"])
    outputs = [distill(cfg, data, prepared)]
    if baseline:
        nokd = replace(
            cfg,
            alpha=1.0,
            output_dir=output_dirs(cfg.output_dir, True)[1],
            name=f"{cfg.name}-nokd",
            extra_source={"baseline_of": cfg.name},
        )
        outputs.append(distill(nokd, data, prepared))
    return outputs
