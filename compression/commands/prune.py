"""`prune`: prune a package (magnitude, movement or structured), then finish it."""

from __future__ import annotations

import argparse
from pathlib import Path

from compression.commands.common import UsageError, add_quant_args, data_from_args, quant_settings
from compression.config import METHODS, PruneConfig

HELP = "prune a package (magnitude, movement or structured), then finish it"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """What to prune and how, the fine-tuning, the run and the int8 options; defaults from PruneConfig."""
    c = PruneConfig
    # --package and --teacher as in every other command; --model and --distill-from stay as aliases.
    p.add_argument("--package", "--model", dest="model", type=Path, default=c.model_dir, help="package to prune")
    p.add_argument("--method", choices=list(METHODS), default=c.method)
    p.add_argument("--sparsity", type=float, default=c.sparsity, help="final share of zero encoder Linear weights")
    p.add_argument(
        "--initial-sparsity", type=float, default=c.initial_sparsity, help="sparsity at the start of the cubic schedule"
    )
    p.add_argument("--prune-start", type=float, default=c.prune_start, help="share of steps before pruning starts (t0)")
    p.add_argument(
        "--prune-end", type=float, default=c.prune_end, help="share of steps by which the final sparsity is reached"
    )
    p.add_argument("--prune-every", type=int, default=c.prune_every, help="steps between sparsity updates (dt)")
    p.add_argument("--heads-per-layer", type=int, help="structured: attention heads kept in every layer")
    p.add_argument("--ffn-keep", type=int, help="structured: FFN neurons kept in every layer")
    p.add_argument(
        "--importance-examples",
        type=int,
        default=c.importance_examples,
        help="structured: train examples for importance",
    )
    p.add_argument(
        "--teacher",
        "--distill-from",
        dest="distill_from",
        type=Path,
        help="teacher package for the KD loss (default: labels only)",
    )
    p.add_argument(
        "--alpha", type=float, default=c.alpha, help="weight of the hard-label cross-entropy (with a teacher)"
    )
    p.add_argument("--temperature", type=float, default=c.temperature)
    p.add_argument("--epochs", type=float, default=c.epochs)
    p.add_argument("--learning-rate", "--lr", dest="lr", type=float, default=c.learning_rate)
    p.add_argument(
        "--scores-lr", type=float, default=c.scores_learning_rate, help="movement: learning rate of the mask scores"
    )
    p.add_argument("--batch-size", type=int, default=c.batch_size)
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
    p.add_argument("--seed", type=int, default=c.seed)
    add_quant_args(p)


def config_from_args(args: argparse.Namespace) -> PruneConfig:
    """The PruneConfig the options describe."""
    return PruneConfig(
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


def run(args: argparse.Namespace) -> int:
    """Prune one package and save it, then finish it unless --no-finish."""
    from compression.commands.finish import finish_package
    from compression.packaging import check_output_dir
    from compression.prune import prune

    if not (Path(args.model) / "manifest.json").is_file():
        raise SystemExit(f"prune: no model package at {args.model} (run `python -m compression distill` first)")
    if args.distill_from is not None and not (Path(args.distill_from) / "manifest.json").is_file():
        raise SystemExit(f"prune: no teacher package at {args.distill_from} (--teacher)")
    cfg = config_from_args(args)
    # Before the pruning run, not after; never over (or inside) the package pruned or the teacher.
    check_output_dir(cfg.output_dir, args.model, args.distill_from)
    try:
        cfg.validate()
    except ValueError as exc:  # a setting out of range: usage and exit code 2, as for every command
        raise UsageError(str(exc)) from None
    data = data_from_args(args, *(Path(p) for p in (args.model, args.distill_from) if p is not None))
    package = prune(cfg, data)
    if not args.no_finish:
        finish_package(package, data, num_threads=args.num_threads or 0, **quant_settings(args))
    return 0
