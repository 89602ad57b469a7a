"""`seeds`: the KD student against the same student at alpha = 1 over several seeds, and a verdict."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from compression.commands.common import data_from_args

if TYPE_CHECKING:
    from research.seeds import SeedStudyConfig

HELP = "KD student vs the same student at alpha = 1 over several seeds: paired differences and a verdict"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The recipe, the seeds, the parallelism and the report; defaults from SeedStudyConfig."""
    from research.seeds import SeedStudyConfig as Cfg

    p.add_argument("--teacher", type=Path, default=Cfg.teacher_dir, help="teacher package")
    p.add_argument("--output-dir", type=Path, default=Cfg.output_dir, help="one package folder per run, and the report")
    p.add_argument("--seeds", type=int, nargs="+", default=list(Cfg.seeds))
    p.add_argument("--student", default=Cfg.student, help='"layers:i,j,k" of the teacher, or an HF id / dir')
    p.add_argument("--alpha", type=float, default=Cfg.alpha, help="the KD arm's alpha (the other arm uses 1)")
    p.add_argument("--temperature", type=float, default=Cfg.temperature)
    p.add_argument("--epochs", type=float, default=Cfg.epochs)
    p.add_argument("--learning-rate", type=float, default=Cfg.learning_rate)
    p.add_argument("--batch-size", type=int, default=Cfg.batch_size)
    p.add_argument("--parallel", type=int, default=Cfg.parallel, help="training runs at a time")
    p.add_argument("--num-threads", type=int, default=Cfg.num_threads, help="torch threads per run (default: torch's)")
    p.add_argument("--confidence", type=float, default=Cfg.confidence, help="level of the paired-t interval")
    p.add_argument(
        "--report-dir",
        type=Path,
        default=Cfg.report_dir,
        help="also rewrite seeds.json / seeds.md here after every run",
    )
    p.add_argument(
        "--distill-args",
        default="",
        help='more `distill` arguments for both arms, one string (e.g. "--augment-copies 2")',
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="train nothing: one report in --output-dir from these seeds.json files (same recipe)",
    )


def config_from_args(args: argparse.Namespace) -> SeedStudyConfig:
    """The SeedStudyConfig the options describe (the global data options included: the runs read the same data)."""
    import shlex

    from research.seeds import SeedStudyConfig

    return SeedStudyConfig(
        teacher_dir=args.teacher,
        output_dir=args.output_dir,
        seeds=tuple(args.seeds),
        student=args.student,
        alpha=args.alpha,
        temperature=args.temperature,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        parallel=args.parallel,
        num_threads=args.num_threads,
        data=args.data,
        oos_label=args.oos_label,
        domains=args.domains,
        confidence=args.confidence,
        report_dir=args.report_dir,
        extra_args=tuple(shlex.split(args.distill_args)),
    )


def run(args: argparse.Namespace) -> int:
    """Run (or merge) a seed study and print its report."""
    from research.seeds import format_report, merge_studies, run_study

    if args.merge:
        missing = [str(f) for f in args.merge if not f.is_file()]
        if missing:
            raise SystemExit(f"seeds --merge: no such file: {', '.join(missing)}")
        try:
            study = merge_studies(list(args.merge), args.output_dir, args.confidence)
        except ValueError as exc:
            raise SystemExit(f"seeds --merge: {exc}") from exc
    else:
        cfg = config_from_args(args)
        try:
            study = run_study(cfg, data_from_args(args, cfg.teacher_dir))  # validates first, then trains
        except ValueError as exc:
            raise SystemExit(f"seeds: {exc}") from exc
    print(format_report(study))
    print(f"wrote {args.output_dir / 'seeds.json'}, {args.output_dir / 'seeds.md'}")
    return 0
