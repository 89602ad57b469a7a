"""Seed study: does distillation beat the same student trained without the teacher (alpha = 1) beyond seed noise?

`study` plans and runs the paired jobs and writes the report, `jobs` runs them a bounded number at a time,
`scores` scores each package, `stats` holds the paired comparison and the verdict rule, `report` the Markdown.
"""

from research.seeds.jobs import run_parallel
from research.seeds.report import format_report
from research.seeds.scores import oos_auroc, package_scores
from research.seeds.stats import (
    ARMS,
    METRICS,
    MIN_GAIN,
    MIN_SEEDS,
    VERDICT_METRIC,
    accuracy_parts,
    paired,
    summarize,
    t_quantile,
)
from research.seeds.study import (
    LOGITS_CACHE,
    RECIPE_KEYS,
    SCORES_FILE,
    Run,
    SeedStudyConfig,
    command,
    load_records,
    merge_studies,
    plan,
    recipe,
    run_study,
    teacher_id,
    write_study,
)

__all__ = [
    "ARMS",
    "LOGITS_CACHE",
    "METRICS",
    "MIN_GAIN",
    "MIN_SEEDS",
    "RECIPE_KEYS",
    "SCORES_FILE",
    "VERDICT_METRIC",
    "Run",
    "SeedStudyConfig",
    "accuracy_parts",
    "command",
    "format_report",
    "load_records",
    "merge_studies",
    "oos_auroc",
    "package_scores",
    "paired",
    "plan",
    "recipe",
    "run_parallel",
    "run_study",
    "summarize",
    "t_quantile",
    "teacher_id",
    "write_study",
]
