"""Command-line entry points for every compression step (`python -m compression STEP --help`)."""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from app.decision import DEFAULT_OOS_LABEL, OOS_SCORES
from compression.config import HIDDEN_TARGETS, PRESETS, STUDENT_PRESETS, FinetuneConfig

if TYPE_CHECKING:  # torch-free at import: the CLI loads heavy modules per command
    from compression.data import ClincData
    from compression.distill import DistillConfig

logger = logging.getLogger("compression")


def _finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    cfg = FinetuneConfig()
    for key, value in PRESETS[args.preset].items():
        setattr(cfg, key, value)
    for f in fields(FinetuneConfig):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(cfg, f.name, Path(value) if f.name == "output_dir" else value)
    return cfg


def data_from_args(args: argparse.Namespace) -> ClincData:
    """The --data source with --oos-label and --domains; a bad file ends the command with one line, not a traceback."""
    from compression.data import load_data as load

    try:
        return load(args.data, oos_label=args.oos_label, domains_file=args.domains)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"python -m compression: error: --data: {exc}") from None


def _add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument(
        "--base-model",
        dest="base_model",
        help="all-MiniLM-L6-v2 (default), all-mpnet-base-v2, another HF id, or a local folder",
    )
    p.add_argument("--output-dir", dest="output_dir", help="package folder to write (default artifacts/teacher)")
    p.add_argument("--name", help="package name recorded in the manifest")
    p.add_argument("--epochs", type=float)
    p.add_argument("--learning-rate", dest="learning_rate", type=float)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--max-length", dest="max_length", type=int)
    p.add_argument("--max-train-samples", dest="max_train_samples", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--num-threads", dest="num_threads", type=int)
    p.add_argument(
        "--bf16", action=argparse.BooleanOptionalAction, help="bf16 autocast in training (default: the preset's)"
    )


def _add_distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", type=Path, default=Path("artifacts/teacher"), help="teacher package")
    p.add_argument(
        "--extra-teacher",
        type=Path,
        action="append",
        default=[],
        help="another teacher package whose logits are averaged into the soft targets (repeatable)",
    )
    p.add_argument(
        "--student",
        default="layers:0,2,4",
        help='"layers:i,j,k" of the teacher, or a base model (all-MiniLM-L6-v2, an HF id or a folder) read with '
        "its own tokenizer",
    )
    p.add_argument(
        "--student-layers", default="", help='with a base-model --student: keep only these of its layers ("0,2,4")'
    )
    p.add_argument("--output-dir", type=Path, default=Path("artifacts/student"))
    p.add_argument("--name", default="student")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label cross-entropy")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument(
        "--logit-mse", type=float, default=0.0, help="weight of an MSE between raw student and teacher logits"
    )
    p.add_argument(
        "--hidden-weight",
        type=float,
        default=0.0,
        help="weight of a hidden-state term pulling each student layer towards the teacher layer it replaces (0 = off)",
    )
    p.add_argument(
        "--hidden-target",
        choices=HIDDEN_TARGETS,
        default="cls",
        help="cls: normalised [CLS] states (Patient KD); tokens: MSE over every token's state (TinyBERT)",
    )
    p.add_argument("--epochs", type=float, default=8.0)
    p.add_argument("--learning-rate", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument(
        "--augment-copies",
        type=int,
        default=0,
        help="noisy copies of each train query added to the transfer set, labelled by the teacher (0 = none)",
    )
    p.add_argument(
        "--augment-prob", type=float, default=0.1, help="per-word probability of each edit: delete, replace, swap"
    )
    p.add_argument(
        "--augment-crossovers",
        type=int,
        default=0,
        help="crossover queries (head of one intent's query + tail of another's) labelled by the teacher's "
        "decision incl. its oos rule (0 = none)",
    )
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in training (measure its accuracy first)")
    p.add_argument("--trials", type=int, default=0, help="Optuna trials before the final run (0 = no search)")
    p.add_argument("--trial-fraction", type=float, default=0.2, help="share of the train split per trial")
    p.add_argument("--baseline", action="store_true", help="also train the same student with alpha=1 (no teacher)")
    p.add_argument("--no-finish", action="store_true", help="train and save only (no export/quantize/evaluate)")
    p.add_argument(
        "--logits-cache",
        type=Path,
        help="folder of teacher logits keyed by the teachers' files, max length and texts: runs that share a "
        "teacher and transfer set compute them once (default: no cache)",
    )
    p.add_argument("--num-threads", type=int)
    p.add_argument("--seed", type=int, default=42)


def run_distill(args: argparse.Namespace, data: ClincData) -> list[Path]:
    """The `distill` command: a DistillConfig from the arguments, then distill_student."""
    from compression.augment import AugmentConfig
    from compression.distill import DistillConfig

    cfg = DistillConfig(
        teacher_dir=args.teacher,
        extra_teachers=tuple(args.extra_teacher),
        student=args.student,
        student_layers=args.student_layers,
        output_dir=args.output_dir,
        name=args.name,
        alpha=args.alpha,
        temperature=args.temperature,
        logit_mse=args.logit_mse,
        hidden_weight=args.hidden_weight,
        hidden_target=args.hidden_target,
        epochs=args.epochs,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        num_threads=args.num_threads,
        seed=args.seed,
        bf16=args.bf16,
        logits_cache=args.logits_cache,
        augment=AugmentConfig(
            copies=args.augment_copies,
            p_delete=args.augment_prob,
            p_replace=args.augment_prob,
            p_swap=args.augment_prob,
            crossovers=args.augment_crossovers,
            seed=args.seed,
        ),
    )
    return distill_student(cfg, data, args.trials, args.trial_fraction, args.baseline)


def distill_student(
    cfg: DistillConfig, data: ClincData, trials: int = 0, trial_fraction: float = 0.2, baseline: bool = False
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
            output_dir=Path(f"{cfg.output_dir}-nokd"),
            name=f"{cfg.name}-nokd",
            extra_source={"baseline_of": cfg.name},
        )
        outputs.append(distill(nokd, data, prepared))
    return outputs


def _add_prune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", type=Path, default=Path("artifacts/student"), help="package to prune (the student)")
    p.add_argument("--method", choices=["magnitude", "movement", "structured"], default="magnitude")
    p.add_argument("--sparsity", type=float, default=0.9, help="final share of zero encoder Linear weights")
    p.add_argument("--initial-sparsity", type=float, default=0.0, help="sparsity at the start of the cubic schedule")
    p.add_argument("--prune-start", type=float, default=0.1, help="share of steps before pruning starts (t0)")
    p.add_argument("--prune-end", type=float, default=0.7, help="share of steps by which the final sparsity is reached")
    p.add_argument("--prune-every", type=int, default=10, help="steps between sparsity updates (dt)")
    p.add_argument("--heads-per-layer", type=int, help="structured: attention heads kept in every layer")
    p.add_argument("--ffn-keep", type=int, help="structured: FFN neurons kept in every layer")
    p.add_argument("--importance-examples", type=int, default=2048, help="structured: train examples for importance")
    p.add_argument("--distill-from", type=Path, help="teacher package for the KD loss (default: labels only)")
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the hard-label cross-entropy (with a teacher)")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--epochs", type=float, default=10.0)
    p.add_argument("--lr", "--learning-rate", dest="lr", type=float, default=1e-4)
    p.add_argument("--scores-lr", type=float, default=1e-2, help="movement: learning rate of the mask scores")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-train-examples", type=int, help="random subset of the train split (quick runs)")
    p.add_argument("--output-dir", type=Path, help="default: artifacts/pruned-METHOD-SPARSITY (or -hH-fF)")
    p.add_argument("--name", help="package name (default: the output folder's name)")
    p.add_argument("--device", help="cuda or cpu (default: cuda when available)")
    p.add_argument("--no-finish", action="store_true", help="train and save only (no export/quantize/evaluate)")
    p.add_argument(
        "--logits-cache",
        type=Path,
        help="with --distill-from: folder of teacher logits shared by runs with the same teacher and train set",
    )
    p.add_argument("--num-threads", type=int)
    p.add_argument("--seed", type=int, default=42)


def run_prune(args: argparse.Namespace, data: ClincData) -> Path:
    """Prune one package (magnitude, movement or structured) and save it."""
    from compression.prune import PruneConfig, prune

    if not (Path(args.model) / "manifest.json").is_file():
        raise SystemExit(f"prune: no model package at {args.model} (run `python -m compression distill` first)")
    if args.distill_from is not None and not (Path(args.distill_from) / "manifest.json").is_file():
        raise SystemExit(f"prune: no teacher package at {args.distill_from} (--distill-from)")
    cfg = PruneConfig(
        model_dir=args.model,
        method=args.method,
        output_dir=args.output_dir,
        name=args.name,
        sparsity=args.sparsity,
        initial_sparsity=args.initial_sparsity,
        prune_start=args.prune_start,
        prune_end=args.prune_end,
        prune_every=args.prune_every,
        epochs=args.epochs,
        learning_rate=args.lr,
        scores_learning_rate=args.scores_lr,
        batch_size=args.batch_size,
        teacher_dir=args.distill_from,
        alpha=args.alpha,
        temperature=args.temperature,
        heads_per_layer=args.heads_per_layer,
        ffn_keep=args.ffn_keep,
        importance_examples=args.importance_examples,
        max_train_examples=args.max_train_examples,
        seed=args.seed,
        num_threads=args.num_threads,
        logits_cache=args.logits_cache,
        device=args.device,
    )
    try:
        cfg.validate()
    except ValueError as exc:
        raise SystemExit(f"prune: {exc}") from exc
    return prune(cfg, data)


def _add_seeds_args(p: argparse.ArgumentParser) -> None:
    from compression.seeds import SeedStudyConfig

    d = SeedStudyConfig()
    p.add_argument("--teacher", type=Path, default=d.teacher_dir, help="teacher package")
    p.add_argument("--output-dir", type=Path, default=d.output_dir, help="one package folder per run, and the report")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--student", default=d.student, help='"layers:i,j,k" of the teacher, or an HF id / dir')
    p.add_argument("--alpha", type=float, default=d.alpha, help="the KD arm's alpha (the other arm uses 1)")
    p.add_argument("--temperature", type=float, default=d.temperature)
    p.add_argument("--epochs", type=float, default=d.epochs)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--parallel", type=int, default=d.parallel, help="training runs at a time")
    p.add_argument("--num-threads", type=int, help="torch threads per run (default: torch's)")
    p.add_argument("--confidence", type=float, default=d.confidence, help="level of the paired-t interval")
    p.add_argument("--report-dir", type=Path, help="also rewrite seeds.json / seeds.md here after every run")
    p.add_argument(
        "--distill-args", default="", help='more `distill` arguments for both arms, one string (e.g. "--logit-mse 1")'
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        help="train nothing: one report in --output-dir from these seeds.json files (same recipe)",
    )


def run_seeds(args: argparse.Namespace) -> dict:
    """The `seeds` command: run (or merge) a seed study and print its report."""
    import shlex

    from compression.seeds import SeedStudyConfig, format_report, merge_studies, run_study

    if args.merge:
        missing = [str(f) for f in args.merge if not f.is_file()]
        if missing:
            raise SystemExit(f"seeds --merge: no such file: {', '.join(missing)}")
        try:
            study = merge_studies(list(args.merge), args.output_dir, args.confidence)
        except ValueError as exc:
            raise SystemExit(f"seeds --merge: {exc}") from exc
    else:
        cfg = SeedStudyConfig(
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
            confidence=args.confidence,
            report_dir=args.report_dir,
            extra_args=tuple(shlex.split(args.distill_args)),
        )
        try:
            study = run_study(cfg, data_from_args(args))  # validates first, then trains
        except ValueError as exc:
            raise SystemExit(f"seeds: {exc}") from exc
    print(format_report(study))
    print(f"wrote {args.output_dir / 'seeds.json'}, {args.output_dir / 'seeds.md'}")
    return study


def _add_package_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--package", type=Path, default=Path("artifacts/teacher"), help="model package folder")


def _add_quant_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quant-preset", default="avx512_vnni", choices=["avx512_vnni", "avx2", "arm64"])
    p.add_argument(
        "--per-channel",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="per-channel weight scales (default; --no-per-channel: one scale per matrix, slightly faster)",
    )
    p.add_argument(
        "--quant-graph",
        choices=["fused", "plain"],
        default="fused",
        help="int8 from the package's fused model.onnx (default: QAttention and fused kernels) or the plain export",
    )
    p.add_argument(
        "--embedding-bits",
        type=int,
        choices=[8, 4],
        help="word-embedding table precision in the int8 model (4 = block-wise 4-bit, ~1.7x smaller table); "
        "default 8, and for build's student the preset's choice",
    )


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    parser = argparse.ArgumentParser(prog="python -m compression", description=__doc__)
    parser.add_argument(
        "--data",
        help="CSV or JSONL file of text,label[,split] (your own intents), a CLINC150 oos-eval JSON or an HF dataset "
        "name (default: the local CLINC150 file if present)",
    )
    parser.add_argument(
        "--oos-label",
        default=DEFAULT_OOS_LABEL,
        help="the out-of-scope label, the service's fallback answer; data without such rows still gets it as a "
        "class (default: %(default)s)",
    )
    parser.add_argument(
        "--domains",
        type=Path,
        help='JSON {"domain": [intents]} named in the fallback message (default: CLINC150\'s domains.json for '
        "CLINC150, else none: a generic message)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_finetune_args(sub.add_parser("finetune", help="fine-tune a base encoder into a package"))
    p = sub.add_parser("export", help="add model.onnx (ORT graph-optimized) to a package")
    _add_package_arg(p)
    p.add_argument("--optimization-level", type=int, default=2, choices=[1, 2, 99])
    p = sub.add_parser("quantize", help="add model_quantized.onnx (ORT dynamic int8) to a package")
    _add_package_arg(p)
    _add_quant_args(p)
    p = sub.add_parser("calibrate", help="choose the oos rule (score + threshold) on the validation split")
    _add_package_arg(p)
    p.add_argument("--objective", default="recall-at-loss", choices=["recall-at-loss", "balanced", "accuracy"])
    p.add_argument("--max-in-scope-loss", type=float, default=0.01, help="recall-at-loss: in-scope accuracy budget")
    p.add_argument(
        "--scores",
        default=",".join(OOS_SCORES),
        help=f"comma-separated oos scores to try ({', '.join(OOS_SCORES)}); the best on validation wins",
    )
    p = sub.add_parser("evaluate", help="accuracy / size / latency of each backend on the test split")
    _add_package_arg(p)
    p.add_argument("--backends", nargs="+", default=["torch", "torch-int8", "onnx", "onnx-int8"])
    p.add_argument("--latency-runs", type=int, default=200)
    p.add_argument("--num-threads", type=int, default=0)
    p = sub.add_parser("distill", help="distill a teacher package into a student (KD, optional Optuna search)")
    _add_distill_args(p)
    _add_quant_args(p)
    p = sub.add_parser("prune", help="prune a package (magnitude, movement or structured), then finish it")
    _add_prune_args(p)
    _add_quant_args(p)
    p = sub.add_parser("finish", help="export -> quantize -> calibrate -> evaluate a trained package (e.g. from a GPU)")
    _add_package_arg(p)
    _add_quant_args(p)
    p.add_argument("--num-threads", type=int, default=0)
    p = sub.add_parser("benchmark", help="every package x backend in one run: accuracy, size, latency, ratios, plot")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--artifacts", type=Path, default=Path("artifacts"), help="folder searched for packages")
    where.add_argument("--packages", type=Path, nargs="+", help="explicit package folders (instead of --artifacts)")
    p.add_argument("--backends", nargs="+", choices=["torch", "torch-int8", "onnx", "onnx-int8"], help="default: all")
    p.add_argument("--reference", type=Path, help="reference package (default: the one named 'teacher'); row = torch")
    p.add_argument("--num-threads", type=int, default=0, help="threads for torch and ORT (0 = all cores)")
    p.add_argument("--latency-runs", type=int, default=200, help="timed single-query runs per row")
    p.add_argument("--warmup-runs", type=int, default=20)
    p.add_argument("--rounds", type=int, default=10, help="round-robin blocks the timed runs are split into")
    p.add_argument("--no-bert-base", action="store_true", help="skip the timing-only bert-base-shaped row")
    p.add_argument("--output-dir", type=Path, default=Path("reports"))
    p = sub.add_parser(
        "frontier", help="best oos recall any threshold reaches at an in-scope floor (a diagnostic, not a rule)"
    )
    p.add_argument("packages", type=Path, nargs="+", help="package folders")
    p.add_argument("--splits", nargs="+", choices=["validation", "test"], default=["test"])
    p.add_argument("--backend", choices=["torch", "torch-int8", "onnx", "onnx-int8"], default="onnx-int8")
    p.add_argument(
        "--min-in-scope", type=float, nargs="+", default=[0.95], help="in-scope accuracy floors (one table row each)"
    )
    p.add_argument("--min-oos-recall", type=float, default=0.70, help="oos recall target read off the frontier")
    p.add_argument("--num-threads", type=int, default=0)
    p.add_argument("--output", type=Path, help="also write the Markdown table here")
    p = sub.add_parser(
        "seeds", help="KD student vs the same student at alpha = 1 over several seeds: paired differences and a verdict"
    )
    _add_seeds_args(p)
    p = sub.add_parser("ship", help="copy only what one backend reads into a new folder (e.g. models/NAME)")
    _add_package_arg(p)
    p.add_argument("--output-dir", type=Path, required=True, help="the slim package folder to write")
    p.add_argument("--backend", default="onnx-int8", help="the backend whose files are kept")
    p.add_argument("--name", help="package name in the new manifest (default: the package's)")
    p = sub.add_parser("build", help="finetune -> export -> quantize -> calibrate -> evaluate")
    _add_finetune_args(p)
    _add_quant_args(p)
    p.add_argument("--reuse", action="store_true", help="keep an existing trained package (skip finetune)")
    p.add_argument("--no-student", action="store_true", help="full preset: stop after the teacher")
    p.add_argument(
        "--student-trials", type=int, default=0, help="full preset: Optuna trials instead of the preset's recipe"
    )
    p.add_argument("--trial-fraction", type=float, default=0.5, help="share of the train split per Optuna trial")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run one step."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Third-party libraries (ORT's quantizer) log at INFO on the root logger: keep them quiet.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("compression", "app"):
        logging.getLogger(name).setLevel(logging.DEBUG if args.verbose else logging.INFO)

    from compression.base_models import BaseModelError

    try:
        return _dispatch(parser, args)
    except BaseModelError as exc:  # a missing or damaged base encoder: one line naming the fix
        raise SystemExit(f"{args.command}: {exc}") from None


def _dispatch(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Run the chosen command."""
    if args.command == "finetune":
        from compression.finetune import finetune

        finetune(_finetune_config(args), data_from_args(args))
    elif args.command == "export":
        from compression.export import ExportConfig, export

        export(ExportConfig(args.package, args.optimization_level))
    elif args.command == "quantize":
        from compression.quantize import QuantizeConfig, quantize

        quantize(
            QuantizeConfig(
                args.package,
                args.quant_preset,
                args.per_channel,
                _quant_kwargs(args)["embedding_bits"],
                graph=args.quant_graph,
            )
        )
    elif args.command == "calibrate":
        from compression.calibrate import CalibrateConfig, calibrate

        names = tuple(x.strip() for x in args.scores.split(",") if x.strip())
        unknown = [n for n in names if n not in OOS_SCORES]
        if unknown or not names:
            parser.error(f"--scores: unknown {unknown or 'empty list'}; choose from {', '.join(OOS_SCORES)}")
        cfg = CalibrateConfig(args.package, args.objective, max_in_scope_loss=args.max_in_scope_loss, scores=names)
        calibrate(cfg, data_from_args(args).validation)
    elif args.command == "evaluate":
        from compression.evaluate import EvalConfig, evaluate, format_table

        cfg = EvalConfig(
            args.package, tuple(args.backends), latency_runs=args.latency_runs, num_threads=args.num_threads
        )
        print(format_table(evaluate(cfg, data_from_args(args).test)))
    elif args.command == "distill":
        if args.augment_copies < 0 or not 0.0 <= args.augment_prob < 0.5:
            parser.error("--augment-copies must be >= 0 and --augment-prob in [0, 0.5)")
        if args.augment_crossovers < 0:
            parser.error("--augment-crossovers must be >= 0")
        if args.logit_mse < 0 or args.hidden_weight < 0:
            parser.error("--logit-mse and --hidden-weight must be >= 0")
        data = data_from_args(args)
        for package in run_distill(args, data):
            if not args.no_finish:
                finish_package(package, data, **_quant_kwargs(args), num_threads=args.num_threads or 0)
    elif args.command == "prune":
        data = data_from_args(args)
        package = run_prune(args, data)
        if not args.no_finish:
            finish_package(package, data, **_quant_kwargs(args), num_threads=args.num_threads or 0)
    elif args.command == "finish":  # e.g. a package trained with --no-finish on a GPU machine without optimum
        if not (args.package / "manifest.json").is_file():
            raise SystemExit(f"finish: no model package at {args.package} (pass --package PACKAGE_DIR)")
        finish_package(args.package, data_from_args(args), **_quant_kwargs(args), num_threads=args.num_threads)
    elif args.command == "benchmark":
        from compression.benchmark import BenchmarkConfig, format_markdown, run_benchmark, write_reports

        cfg = BenchmarkConfig(
            artifacts=args.artifacts,
            packages=tuple(args.packages or ()),
            backends=tuple(args.backends) if args.backends else None,
            reference=args.reference,
            num_threads=args.num_threads,
            latency_runs=args.latency_runs,
            warmup_runs=args.warmup_runs,
            rounds=args.rounds,
            bert_base=not args.no_bert_base,
            output_dir=args.output_dir,
        )
        data = data_from_args(args)
        report = run_benchmark(cfg, data.test, data.source)
        paths = write_reports(report, cfg.output_dir)
        print(format_markdown(report))
        print("wrote " + ", ".join(str(path) for path in paths.values()))
    elif args.command == "frontier":
        from compression.frontier import FrontierConfig, format_frontier, run_frontier

        if not all(0.0 < f <= 1.0 for f in args.min_in_scope) or not 0.0 <= args.min_oos_recall <= 1.0:
            parser.error("--min-in-scope must be in (0, 1] and --min-oos-recall in [0, 1]")
        missing = [str(p) for p in args.packages if not (p / "manifest.json").is_file()]
        if missing:
            parser.error(f"no model package at {', '.join(missing)}")
        cfg = FrontierConfig(
            packages=tuple(args.packages),
            splits=tuple(args.splits),
            backend=args.backend,
            min_in_scope=tuple(args.min_in_scope),
            min_oos_recall=args.min_oos_recall,
            num_threads=args.num_threads,
        )
        data = data_from_args(args)
        table = format_frontier(run_frontier(cfg, {"validation": data.validation, "test": data.test}), cfg)
        print(table)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(table + "\n")
            print(f"wrote {args.output}")
    elif args.command == "seeds":
        run_seeds(args)
    elif args.command == "ship":
        from app.package import PackageError
        from compression.ship import ShipConfig, ship

        try:
            print(ship(ShipConfig(args.package, args.output_dir, args.backend, args.name)))
        except (ValueError, PackageError) as exc:
            raise SystemExit(f"ship: {exc}") from None
    elif args.command == "build":
        build(args)
    return 0


def _quant_kwargs(args: argparse.Namespace) -> dict[str, str | bool | int]:
    bits = args.embedding_bits or 8  # unset: 8
    return {
        "quant_preset": args.quant_preset,
        "per_channel": args.per_channel,
        "embedding_bits": bits,
        "quant_graph": args.quant_graph,
    }


def finish_package(
    package: Path,
    data: ClincData,
    quant_preset: str = "avx512_vnni",
    per_channel: bool = True,
    num_threads: int = 0,
    embedding_bits: int = 8,
    quant_graph: str = "fused",
) -> dict:
    """export -> quantize -> calibrate -> evaluate one trained package; prints and returns the table."""
    from app.package import read_manifest
    from compression.calibrate import CalibrateConfig, calibrate
    from compression.evaluate import EvalConfig, evaluate, format_table
    from compression.export import ExportConfig, export
    from compression.quantize import QuantizeConfig, quantize

    export(ExportConfig(package))
    quantize(QuantizeConfig(package, quant_preset, per_channel, embedding_bits, graph=quant_graph))
    calibrate(CalibrateConfig(package, num_threads=num_threads), data.validation)
    results = evaluate(EvalConfig(package, num_threads=num_threads), data.test)
    if "pruning" in read_manifest(package).source:
        from compression.prune import record_compressed_sizes

        record_compressed_sizes(package)  # the ONNX files exist now
    print(f"{package}:\n{format_table(results)}")
    return results


def build(args: argparse.Namespace) -> None:
    """Run the whole chain for one preset (full adds the distilled student) and print the tables."""
    from compression.finetune import finetune

    start = time.perf_counter()
    cfg = _finetune_config(args)
    data = data_from_args(args)
    if args.reuse and (Path(cfg.output_dir) / "model.safetensors").is_file():
        logger.info("reusing trained weights in %s", cfg.output_dir)
    else:
        finetune(cfg, data)
    finish_package(cfg.output_dir, data, **_quant_kwargs(args), num_threads=cfg.num_threads or 0)
    built = [Path(cfg.output_dir)]
    student = STUDENT_PRESETS.get(args.preset)
    if student and not args.no_student:
        built += build_student(Path(cfg.output_dir), student, args, data, cfg.num_threads)
    logger.info(
        "build (%s preset) finished in %.1f min: %s",
        args.preset,
        (time.perf_counter() - start) / 60,
        ", ".join(map(str, built)),
    )


def build_student(
    teacher_dir: Path, preset: dict, args: argparse.Namespace, data: ClincData, num_threads: int | None
) -> list[Path]:
    """The preset's distilled student (and its alpha=1 baseline) next to the teacher, finished."""
    from compression.distill import DistillConfig

    recipe = {k: v for k, v in preset.items() if k not in ("baseline", "embedding_bits")}
    cfg = DistillConfig(
        teacher_dir=teacher_dir,
        output_dir=teacher_dir.parent / "student",
        name="student",
        num_threads=num_threads,
        **recipe,
    )
    packages = distill_student(cfg, data, args.student_trials, args.trial_fraction, preset.get("baseline", False))
    quant = _quant_kwargs(args)
    if args.embedding_bits is None:  # an explicit --embedding-bits wins over the preset's
        quant["embedding_bits"] = preset.get("embedding_bits", 8)
    for package in packages:
        finish_package(package, data, **quant, num_threads=num_threads or 0)
    return packages
