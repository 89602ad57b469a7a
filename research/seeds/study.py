"""Seed study: does distillation beat the same student trained without the teacher (alpha = 1) beyond seed noise?

For each seed, two `distill --no-finish` runs of one recipe: the KD arm (the recipe's alpha) and the alpha = 1
arm (hard labels only, the teacher unused). Each package is scored at fp32 with its own oos rule, chosen on the
validation split as `calibrate` does; the test split is only read. The report gives the paired difference
(KD minus alpha = 1) per seed, its mean and a paired-t confidence interval. The verdict rule is fixed before any
run: distillation *measurably helps* only if at least 5 seeds are paired, the interval for the difference in test
arg-max in-scope accuracy (no oos threshold, so no threshold noise) lies above zero, and the mean gain is at least
+0.5 points. Test accuracy with each package's own oos rule and the oos AUROC are reported beside it.

The KD runs share one teacher pass: every job gets `--logits-cache OUTPUT_DIR/teacher-logits`, so the first KD
run of a study computes the teacher's logits over the train split and the others read them
(compression.teacher_cache).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.decision import DEFAULT_OOS_LABEL
from compression.config import STUDENT_PRESETS
from research.seeds.jobs import run_parallel
from research.seeds.report import format_report
from research.seeds.scores import package_scores
from research.seeds.stats import ARMS, summarize

logger = logging.getLogger(__name__)
LOGITS_CACHE = "teacher-logits"  # the study's shared teacher-logits folder, under its output dir
SCORES_FILE = "scores.json"
RECIPE_KEYS = ("student", "alpha", "temperature", "epochs", "learning_rate", "batch_size", "extra_args", "teacher")
_PRESET = STUDENT_PRESETS["full"] or {}


@dataclass
class SeedStudyConfig:
    """One recipe, several seeds, both arms."""

    teacher_dir: Path = Path("artifacts/teacher")
    output_dir: Path = Path("runs/seeds")
    seeds: tuple[int, ...] = (42, 43, 44, 45, 46)
    student: str = str(_PRESET.get("student", "layers:0,2,4"))
    alpha: float = float(_PRESET.get("alpha", 0.5))
    temperature: float = float(_PRESET.get("temperature", 2.0))
    epochs: float = float(_PRESET.get("epochs", 6.0))
    learning_rate: float = float(_PRESET.get("learning_rate", 2e-4))
    batch_size: int = 32
    parallel: int = 1
    num_threads: int | None = None
    data: str | None = None
    # The other global options the runs must share with the study (the data's oos label and domains).
    oos_label: str = DEFAULT_OOS_LABEL
    domains: Path | None = None
    confidence: float = 0.95
    # Also (re)write seeds.json / seeds.md here after every run (e.g. a folder a remote run brings back).
    report_dir: Path | None = None
    extra_args: tuple[str, ...] = field(default_factory=tuple)  # more `distill` arguments, the same for both arms

    def validate(self) -> None:
        """Refuse a study that cannot answer the question, before any training."""
        if not self.seeds:
            raise ValueError("no seeds: pass --seeds with at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds has duplicates: {list(self.seeds)}")
        if not 0.0 <= self.alpha < 1.0:
            raise ValueError(f"--alpha {self.alpha}: the KD arm needs alpha in [0, 1) (alpha = 1 is the other arm)")
        if self.temperature <= 0 or self.epochs <= 0 or self.learning_rate <= 0:
            raise ValueError("--temperature, --epochs and --learning-rate must be > 0")
        if self.parallel < 1:
            raise ValueError(f"--parallel {self.parallel}: run at least one job at a time")
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"--confidence {self.confidence}: choose a level in [0.5, 1)")
        if not (Path(self.teacher_dir) / "manifest.json").is_file():
            raise ValueError(f"no teacher package at {self.teacher_dir} (pass --teacher PACKAGE_DIR)")
        if not (Path(self.teacher_dir) / "model.safetensors").is_file():
            raise ValueError(f"{self.teacher_dir} has no model.safetensors: distillation needs the torch weights")
        if importlib.util.find_spec("torch") is None:  # the jobs run this interpreter: fail once, not per job
            raise ValueError(
                f"torch is not installed for {sys.executable}, which runs the training jobs: run the study with "
                "the project's environment (make install, then .venv/bin/python -m research seeds ...)"
            )
        reserved = {
            "--teacher",
            "--alpha",
            "--seed",
            "--output-dir",
            "--name",
            "--baseline",
            "--trials",
            "--logits-cache",
        }
        clash = reserved & {a.split("=")[0] for a in self.extra_args}
        if clash:
            raise ValueError(f"extra distill arguments may not set {sorted(clash)}: the study sets them per run")


@dataclass(frozen=True)
class Run:
    """One training run of the study."""

    seed: int
    arm: str
    alpha: float
    folder: Path

    @property
    def name(self) -> str:
        """Folder and package name, e.g. s42-kd."""
        return self.folder.name


def plan(cfg: SeedStudyConfig) -> list[Run]:
    """Both arms of every seed, paired seed by seed (so a partial study still holds whole pairs)."""
    return [
        Run(seed, arm, cfg.alpha if arm == "kd" else 1.0, Path(cfg.output_dir) / f"s{seed}-{arm}")
        for seed in cfg.seeds
        for arm in ARMS
    ]


def teacher_id(teacher_dir: Path) -> str:
    """sha256 of the teacher's weights file as it is (not the manifest's record): studies on different teachers
    must not be merged, and a teacher carried in fp16 to a GPU machine is a different teacher."""
    from app.package import sha256_file

    return sha256_file(Path(teacher_dir) / "model.safetensors")


def recipe(cfg: SeedStudyConfig) -> dict[str, Any]:
    """What two studies must share to be merged."""
    return {
        "student": cfg.student,
        "alpha": cfg.alpha,
        "temperature": cfg.temperature,
        "epochs": cfg.epochs,
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "extra_args": list(cfg.extra_args),
        "teacher": teacher_id(cfg.teacher_dir),
    }


def command(cfg: SeedStudyConfig, run: Run) -> list[str]:
    """The `python -m compression distill` command of one run."""
    cmd = [sys.executable, "-m", "compression"]
    if cfg.data:
        cmd += ["--data", cfg.data]
    if cfg.oos_label:
        cmd += ["--oos-label", cfg.oos_label]
    if cfg.domains:
        cmd += ["--domains", str(cfg.domains)]
    cmd += ["distill", "--teacher", str(cfg.teacher_dir), "--student", cfg.student]
    cmd += ["--alpha", repr(run.alpha), "--temperature", repr(cfg.temperature), "--epochs", repr(cfg.epochs)]
    cmd += ["--learning-rate", repr(cfg.learning_rate), "--batch-size", str(cfg.batch_size)]
    cmd += ["--seed", str(run.seed), "--output-dir", str(run.folder), "--name", run.name, "--no-finish"]
    cmd += ["--logits-cache", str(Path(cfg.output_dir) / LOGITS_CACHE)]  # alpha = 1 runs never read it
    if cfg.num_threads:
        cmd += ["--num-threads", str(cfg.num_threads)]
    return cmd + list(cfg.extra_args)


def load_records(folder: Path) -> dict[str, Any] | None:
    """A run's saved scores, if it finished."""
    path = Path(folder) / SCORES_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def write_study(
    runs: list[dict[str, Any]], recipe_: dict[str, Any], output_dir: Path, confidence: float
) -> dict[str, Any]:
    """seeds.json and seeds.md under output_dir; returns the study."""
    study = {"recipe": recipe_, "runs": runs, "summary": summarize(runs, confidence)}
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "seeds.json").write_text(json.dumps(study, indent=1, allow_nan=True))
    (output_dir / "seeds.md").write_text(format_report(study) + "\n")
    return study


def run_study(cfg: SeedStudyConfig, data: Any) -> dict[str, Any]:
    """Train what is missing (at most cfg.parallel at a time), score each new package, write the report."""
    cfg.validate()
    runs = plan(cfg)
    rec = recipe(cfg)
    todo = []
    for run in runs:
        done = load_records(run.folder)
        if done is not None and done.get("recipe") != rec:
            raise ValueError(
                f"{run.folder} holds a run of another recipe or teacher: use another --output-dir or remove it"
            )
        if done is None:
            todo.append(run)
    logger.info("seed study: %d runs, %d to train, %d at a time", len(runs), len(todo), cfg.parallel)

    def report() -> dict[str, Any]:
        records = [r for r in (load_records(run.folder) for run in runs) if r is not None]
        study = write_study(records, rec, Path(cfg.output_dir), cfg.confidence)
        if cfg.report_dir is not None:
            write_study(records, rec, Path(cfg.report_dir), cfg.confidence)
        return study

    def done(i: int, code: int, seconds: float) -> None:
        if code != 0:
            return
        run = todo[i]
        # train_s: the job's wall time while sharing the machine with the other jobs (a cost, not a speed).
        record = {"seed": run.seed, "arm": run.arm, "alpha": run.alpha, "recipe": rec, "train_s": seconds}
        record.update(package_scores(run.folder, data))
        (run.folder / SCORES_FILE).write_text(json.dumps(record, indent=1))
        report()

    commands = [command(cfg, r) for r in todo]
    logs = Path(cfg.output_dir) / "logs"
    results = run_parallel(commands, logs, cfg.parallel, names=[r.name for r in todo], on_done=done)
    failed = [r.name for r, (code, _) in zip(todo, results, strict=True) if code != 0]
    if failed:
        logger.error("failed runs (see %s): %s", logs, failed)
    return report()


def merge_studies(files: list[Path], output_dir: Path, confidence: float = 0.95) -> dict[str, Any]:
    """One report from several seeds.json files of the same recipe (e.g. one per remote run)."""
    if not files:
        raise ValueError("--merge needs at least one seeds.json")
    studies = [json.loads(Path(f).read_text()) for f in files]
    rec = studies[0]["recipe"]
    for f, s in zip(files, studies, strict=True):
        if s["recipe"] != rec:
            diff = {k: (rec.get(k), s["recipe"].get(k)) for k in RECIPE_KEYS if rec.get(k) != s["recipe"].get(k)}
            raise ValueError(f"{f} is a study of another recipe or teacher ({diff}): only equal recipes merge")
    runs: dict[tuple[int, str], dict[str, Any]] = {}
    for f, s in zip(files, studies, strict=True):
        for r in s["runs"]:
            key = (int(r["seed"]), r["arm"])
            if key in runs and runs[key] != r:
                raise ValueError(f"{f}: seed {key[0]} {key[1]} is also in an earlier file with other scores")
            runs[key] = r
    return write_study(list(runs.values()), rec, output_dir, confidence)
