"""Optuna search of distillation hyperparameters on the validation split (never on test)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from compression.data import ClincData
from compression.distill import DistillConfig, DistillSplit, accuracy, train_student

logger = logging.getLogger(__name__)


@dataclass
class SearchConfig:
    """Trial budget and search space; trials train on a subset to fit 2 CPU cores."""

    n_trials: int = 8
    train_fraction: float = 0.2
    alpha: tuple[float, float] = (0.1, 1.0)
    temperature: tuple[float, float] = (1.0, 10.0)
    epochs: tuple[int, int] = (2, 6)
    learning_rate: tuple[float, float] = (5e-5, 5e-4)
    seed: int = 42


def search(
    base: DistillConfig, scfg: SearchConfig, data: ClincData, prepared: tuple[Any, Any, DistillSplit, dict[str, int]]
) -> dict[str, Any]:
    """Maximize validation accuracy of students trained on a train subset; returns the best params + trials."""
    import optuna

    teacher, tokenizer, train, label2id = prepared
    n = max(1, int(len(train) * scfg.train_fraction))
    subset = _subset(train, n, scfg.seed)

    def objective(trial: optuna.Trial) -> float:
        cfg = replace(
            base,
            alpha=trial.suggest_float("alpha", *scfg.alpha),
            temperature=trial.suggest_float("temperature", *scfg.temperature),
            epochs=float(trial.suggest_int("epochs", *scfg.epochs)),
            learning_rate=trial.suggest_float("learning_rate", *scfg.learning_rate, log=True),
        )
        student = train_student(cfg, teacher, tokenizer, subset, list(label2id))
        acc = accuracy(student, tokenizer, data.validation, label2id, cfg.max_length)
        logger.info("trial %d: %s -> validation accuracy %.4f", trial.number, trial.params, acc)
        return acc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=scfg.seed))
    study.optimize(objective, n_trials=scfg.n_trials)
    return {
        "best_params": study.best_params,
        "best_validation_accuracy": study.best_value,
        "n_trials": scfg.n_trials,
        "train_examples_per_trial": n,
        "objective": "validation accuracy (arg-max), students trained on a random train subset",
        "trials": [{"params": t.params, "value": t.value} for t in study.trials],
    }


def _subset(train: DistillSplit, n: int, seed: int) -> DistillSplit:
    import copy
    import random

    idx = sorted(random.Random(seed).sample(range(len(train)), n))
    sub = copy.copy(train)  # every attribute of the full set (soft_targets, ...), only fewer rows
    sub.rows = [train.rows[i] for i in idx]
    return sub
