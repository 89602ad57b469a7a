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
import math
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compression.config import STUDENT_PRESETS

logger = logging.getLogger(__name__)
LOGITS_CACHE = "teacher-logits"  # the study's shared teacher-logits folder, under its output dir

ARMS = ("kd", "a1")  # a1: the same recipe with alpha = 1 (cross-entropy on the hard labels only)
MIN_SEEDS = 5
MIN_GAIN = 0.005  # the smallest mean gain of the verdict's metric that counts (0.5 points)
SCORES_FILE = "scores.json"
RECIPE_KEYS = ("student", "alpha", "temperature", "epochs", "learning_rate", "batch_size", "extra_args", "teacher")
# (split, scores key, metric): the rows of the summary; the first one decides the verdict.
METRICS = (
    ("test", "test_argmax", "in_scope_accuracy"),
    ("test", "test", "accuracy"),
    ("test", "test", "in_scope_accuracy"),
    ("test", "test", "oos_recall"),
    ("test", "test", "oos_auroc"),
    ("validation", "validation", "accuracy"),
    ("validation", "validation_argmax", "in_scope_accuracy"),
)
VERDICT_METRIC = "test_argmax.in_scope_accuracy"
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
    confidence: float = 0.95
    report_dir: Path | None = None  # also (re)write seeds.json / seeds.md here after every run (e.g. a GPU's $OUT)
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
    cmd += ["distill", "--teacher", str(cfg.teacher_dir), "--student", cfg.student]
    cmd += ["--alpha", repr(run.alpha), "--temperature", repr(cfg.temperature), "--epochs", repr(cfg.epochs)]
    cmd += ["--learning-rate", repr(cfg.learning_rate), "--batch-size", str(cfg.batch_size)]
    cmd += ["--seed", str(run.seed), "--output-dir", str(run.folder), "--name", run.name, "--no-finish"]
    cmd += ["--logits-cache", str(Path(cfg.output_dir) / LOGITS_CACHE)]  # alpha = 1 runs never read it
    if cfg.num_threads:
        cmd += ["--num-threads", str(cfg.num_threads)]
    return cmd + list(cfg.extra_args)


def run_parallel(
    commands: list[list[str]],
    logs: Path,
    max_parallel: int,
    cwd: Path | None = None,
    names: list[str] | None = None,
    on_done: Callable[[int, int, float], None] | None = None,
) -> list[tuple[int, float]]:
    """Run the commands, at most max_parallel at a time, each logging to logs/NAME.log; (exit code, seconds) each.

    on_done(index, exit code, seconds) is called as each job ends, so results are kept even if the caller is
    killed later (a GPU call's time limit).

    A bound matters on one GPU as much as on a CPU: small HF Trainer jobs are bound by Python overhead, and on an
    H100 11 at once ran 53 ms per step each against 21 ms for 4 (docs/experiments.md), so more brings nothing.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be >= 1")
    logs.mkdir(parents=True, exist_ok=True)
    names = names or [f"job-{i:02d}" for i in range(len(commands))]
    if len(names) != len(commands):
        raise ValueError("one name per command")
    results: list[tuple[int, float] | None] = [None] * len(commands)
    running: dict[int, tuple[subprocess.Popen, Any, float]] = {}
    pending = list(range(len(commands)))
    while pending or running:
        while pending and len(running) < max_parallel:
            i = pending.pop(0)
            log = (logs / f"{names[i]}.log").open("w")
            logger.info("start %d/%d: %s", i + 1, len(commands), shlex.join(commands[i]))
            proc = subprocess.Popen(commands[i], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            running[i] = (proc, log, time.monotonic())
        time.sleep(0.2)
        for i, (proc, log, started) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[i]
            results[i] = (proc.returncode, time.monotonic() - started)
            tail = " / ".join((logs / f"{names[i]}.log").read_text(errors="replace").splitlines()[-2:])
            level = logging.INFO if proc.returncode == 0 else logging.ERROR
            logger.log(level, "done %d/%d (exit %d): %s", i + 1, len(commands), proc.returncode, tail)
            if on_done is not None:
                on_done(i, proc.returncode, results[i][1])
    return [r for r in results if r is not None]


def package_scores(package: Path, data: Any, device: str | None = None, batch_size: int = 512) -> dict[str, Any]:
    """fp32 logits on validation and test; the oos rule chosen on validation (as `calibrate`); scores on both."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from app.decision import oos_score
    from app.package import read_manifest
    from compression.calibrate import CalibrateConfig, choose_rule
    from compression.evaluate import scores

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    manifest = read_manifest(package)
    tokenizer = AutoTokenizer.from_pretrained(package)
    model = AutoModelForSequenceClassification.from_pretrained(package).to(device).eval()
    if [model.config.id2label[i] for i in range(model.config.num_labels)] != manifest.labels:
        raise ValueError(f"{package}: the model's label order differs from its manifest's")

    def logits(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[i : i + batch_size],
                    truncation=True,
                    max_length=manifest.max_length,
                    padding=True,
                    return_tensors="pt",
                )
                out.append(model(**enc.to(device)).logits.float().cpu().numpy())
        return np.concatenate(out)

    val, test = logits(data.validation.texts), logits(data.test.texts)
    score, threshold, val_scores, _ = choose_rule(val, data.validation.labels, manifest, CalibrateConfig())
    oos = manifest.labels.index(manifest.oos_label)

    def with_auroc(block: dict[str, float], split_logits: np.ndarray, gold: list[str]) -> dict[str, float]:
        is_oos = np.asarray([g == manifest.oos_label for g in gold])
        return {**block, "oos_auroc": oos_auroc(oos_score(split_logits, oos, score), is_oos)}

    # Arg-max alone (no oos rule): how many in-scope queries the model gets right at best.
    argmax = {"threshold": -math.inf, "score": "msp"}
    return {
        "rule": {"score": score, "threshold": threshold},
        "validation": with_auroc(val_scores, val, data.validation.labels),
        "test": with_auroc(scores(test, data.test.labels, manifest, threshold, score), test, data.test.labels),
        "validation_argmax": scores(val, data.validation.labels, manifest, **argmax),
        "test_argmax": scores(test, data.test.labels, manifest, **argmax),
    }


def oos_auroc(in_scope_evidence: Any, is_oos: Any) -> float:
    """Area under the ROC curve of telling in-scope from oos queries by the score (ties count half); nan if one class."""
    import numpy as np
    from scipy.stats import rankdata

    evidence, is_oos = np.asarray(in_scope_evidence, dtype=np.float64), np.asarray(is_oos, dtype=bool)
    n_in, n_oos = int((~is_oos).sum()), int(is_oos.sum())
    if not n_in or not n_oos:
        return math.nan
    ranks = rankdata(evidence)  # Mann-Whitney: P(an in-scope query scores above an oos one)
    return float((ranks[~is_oos].sum() - n_in * (n_in + 1) / 2) / (n_in * n_oos))


def t_quantile(p: float, df: int) -> float:
    """Student's t quantile (scipy)."""
    from scipy import stats

    return float(stats.t.ppf(p, df))


def paired(diffs: list[float], confidence: float) -> dict[str, Any]:
    """Mean, sd and the paired-t interval of per-seed differences; wins / losses / ties."""
    n = len(diffs)
    mean = statistics.fmean(diffs) if diffs else math.nan
    sd = statistics.stdev(diffs) if n >= 2 else math.nan
    half = t_quantile((1 + confidence) / 2, n - 1) * sd / math.sqrt(n) if n >= 2 else math.nan
    return {
        "n": n,
        "diffs": diffs,
        "mean": mean,
        "sd": sd,
        "ci": [mean - half, mean + half],
        "wins": sum(d > 0 for d in diffs),
        "losses": sum(d < 0 for d in diffs),
        "ties": sum(d == 0 for d in diffs),
    }


def accuracy_parts(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> dict[str, Any] | None:
    """Split each seed's test accuracy difference into its in-scope and oos recall parts.

    Test accuracy is w x in-scope accuracy + (1 - w) x oos recall, w the in-scope share of the test queries, so
    the difference splits exactly into w x (in-scope difference) + (1 - w) x (oos recall difference). The part
    with the larger sd is where the seed-to-seed spread of the verdict's metric comes from. w is read off the
    records themselves; None when they do not agree on one w (or fewer than 2 pairs).
    """
    blocks = [r["test"] for pair in pairs for r in pair]
    weights = [
        (b["accuracy"] - b["oos_recall"]) / (b["in_scope_accuracy"] - b["oos_recall"])
        for b in blocks
        if abs(b["in_scope_accuracy"] - b["oos_recall"]) > 1e-3
    ]
    if len(pairs) < 2 or not weights or max(weights) - min(weights) > 1e-6:
        return None
    w = statistics.fmean(weights)
    parts: dict[str, list[float]] = {"in_scope": [], "oos_recall": []}
    for kd, a1 in pairs:
        parts["in_scope"].append(w * (kd["test"]["in_scope_accuracy"] - a1["test"]["in_scope_accuracy"]))
        parts["oos_recall"].append((1 - w) * (kd["test"]["oos_recall"] - a1["test"]["oos_recall"]))
    return {
        "in_scope_weight": w,
        **{k: {"mean": statistics.fmean(v), "sd": statistics.stdev(v)} for k, v in parts.items()},
    }


def summarize(records: list[dict[str, Any]], confidence: float = 0.95) -> dict[str, Any]:
    """Paired KD - alpha=1 differences per metric over the seeds that have both arms, and the verdict."""
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for r in records:
        by_seed.setdefault(int(r["seed"]), {})[r["arm"]] = r
    seeds = sorted(s for s, arms in by_seed.items() if set(ARMS) <= set(arms))
    rows = {}
    for split, key, metric in METRICS:
        if not all(metric in by_seed[s][arm][key] for s in seeds for arm in ARMS):
            continue  # e.g. oos_auroc in records written before it was recorded
        diffs = [by_seed[s]["kd"][key][metric] - by_seed[s]["a1"][key][metric] for s in seeds]
        rows[f"{key}.{metric}"] = {"split": split, **paired(diffs, confidence)}
    main = rows[VERDICT_METRIC]
    what = "the test arg-max in-scope accuracy difference"
    if main["n"] < MIN_SEEDS:
        verdict = f"not enough seeds: {main['n']} paired, the rule needs {MIN_SEEDS}"
    elif main["ci"][0] > 0 and main["mean"] >= MIN_GAIN:
        verdict = f"distillation measurably helps: the interval for {what} is above zero and its mean >= +0.5 pts"
    elif main["ci"][1] < 0:
        verdict = f"distillation measurably hurts: the interval for {what} is below zero"
    elif main["ci"][0] > 0:
        verdict = f"not shown: the interval for {what} is above zero but its mean gain is below +0.5 pts"
    else:
        verdict = f"not shown: the interval for {what} contains zero"
    parts = accuracy_parts([(by_seed[s]["kd"], by_seed[s]["a1"]) for s in seeds])
    return {"seeds": seeds, "confidence": confidence, "metrics": rows, "verdict": verdict, "accuracy_parts": parts}


def _pct(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:.2f}"


def _pts(x: float) -> str:
    return "–" if math.isnan(x) else f"{100 * x:+.2f}"


def format_report(study: dict[str, Any]) -> str:
    """Markdown: the recipe, one row per seed (both arms), the paired summary and the verdict."""
    s, rec = study["summary"], study["recipe"]
    lines = [
        "# Seed study: distillation vs alpha = 1",
        "",
        f"Recipe: student `{rec['student']}`, alpha {rec['alpha']}, T {rec['temperature']}, {rec['epochs']} epochs, "
        f"lr {rec['learning_rate']}, batch {rec['batch_size']}"
        + (f", extra `{shlex.join(rec['extra_args'])}`" if rec["extra_args"] else "")
        + f"; teacher weights sha256 {rec['teacher'][:12]}. fp32 torch, each package with its own oos rule chosen on "
        "validation. Figures in %; differences in points (KD - alpha=1).",
        "",
        "| seed | arm | validation acc | test acc | test in-scope | test oos recall | test arg-max in-scope | train min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(study["runs"], key=lambda r: (r["seed"], ARMS.index(r["arm"]))):
        t = r["test"]
        lines.append(
            f"| {r['seed']} | {r['arm']} | {_pct(r['validation']['accuracy'])} | {_pct(t['accuracy'])} | "
            f"{_pct(t['in_scope_accuracy'])} | {_pct(t['oos_recall'])} | {_pct(r['test_argmax']['in_scope_accuracy'])} "
            f"| {r.get('train_s', math.nan) / 60:.1f} |"
        )
    level = round(100 * s["confidence"])
    lines += [
        "",
        f"Paired over seeds {s['seeds']}:",
        "",
        f"| metric | mean diff (pts) | sd (pts) | {level}% interval (pts) | KD wins / losses / ties |",
        "|---|---|---|---|---|",
    ]
    for name, m in s["metrics"].items():
        lines.append(
            f"| {name} | {_pts(m['mean'])} | {_pct(m['sd'])} | [{_pts(m['ci'][0])}, {_pts(m['ci'][1])}] | "
            f"{m['wins']} / {m['losses']} / {m['ties']} |"
        )
    parts = s.get("accuracy_parts")
    if parts:
        w, inside, oos = parts["in_scope_weight"], parts["in_scope"], parts["oos_recall"]
        lines += [
            "",
            f"Test accuracy = {_pct(w)}% x in-scope + {_pct(1 - w)}% x oos recall, so its mean difference "
            f"{_pts(s['metrics']['test.accuracy']['mean'])} is {_pts(inside['mean'])} from in-scope accuracy "
            f"(sd {_pct(inside['sd'])}) and {_pts(oos['mean'])} from oos recall (sd {_pct(oos['sd'])}).",
        ]
    lines += ["", f"**Verdict** (rule fixed in advance, on test arg-max in-scope accuracy): {s['verdict']}."]
    return "\n".join(lines)


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
    """One report from several seeds.json files of the same recipe (e.g. one per GPU call)."""
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
