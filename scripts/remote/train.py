"""Run the training-heavy compression steps on a machine with a GPU, then pack the results for the trip back.

The flow: `scripts/remote/prepare.sh` packs wheels, data and weights into `.remote/`; the repository and
`.remote/` go to any machine with a GPU and PyTorch; this script runs there and writes what should come back
under --out; `scripts/remote/fetch.py` rebuilds full packages from it here.

The same `python -m compression` commands as on a CPU, with CUDA picked up automatically. Stages:

    teacher  fine-tune one teacher per recipe (in parallel processes on the one GPU), calibrate each on the
             validation split and keep the recipe with the best validation accuracy at its own oos rule
    student  Optuna search + distilled student + the same student without the teacher (alpha = 1)
    prune    `python -m compression prune` runs (one per line of --prune-args), in parallel
    seeds    `python -m research seeds`: the KD student and its alpha = 1 twin for each of --seeds; only the
             report (seeds.json, seeds.md) comes back. The teacher is the one the teacher stage of the same
             run trained, or the one prepare.sh packed (TEACHER=DIR)

On the remote machine (the Python version prepare.sh fetched wheels for, with its own torch; the pinned stack
from .remote/whl goes first on the path):

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .remote/whl/*.whl && \
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 scripts/remote/train.py --stages seeds --out OUT_DIR \
        --seeds 42,43,44,45,46 --seed-epochs 20 --max-parallel 5

Jobs run at most --max-parallel at a time: small HF Trainer jobs are bound by Python overhead, and on one GPU
four at once ran 21 ms per step each, eleven 53 ms (docs/experiments.md).

Every choice uses the validation split only; test-split scores are printed for information. Weights travel
back as fp16 packs (scripts/remote/weights.py) in tar chunks of --chunk-mb under --out (for transfers that
limit a file's size); scripts/remote/fetch.py rebuilds full packages from them here.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import shutil
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

import weights  # noqa: E402

logger = logging.getLogger("remote")
SMALL_FILES = ("config.json", "manifest.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt")
SMALL_FILES += ("special_tokens_map.json",)
CHUNK = 15 * 1024 * 1024  # default size of a shipped chunk (--chunk-mb)


def run_parallel(commands: list[list[str]], logs: Path, max_parallel: int) -> None:
    """Run the commands, at most max_parallel at a time (research.seeds.run_parallel); log the failures."""
    from research.seeds import run_parallel as run_bounded

    results = run_bounded(commands, logs / str(int(time.time())), max_parallel, cwd=REPO)
    failed = [shlex.join(cmd) for cmd, (code, _) in zip(commands, results, strict=True) if code != 0]
    if failed:
        logger.error("failed: %s", failed)


def missing_token_rows(base: Path, data: Any) -> list[str]:
    """Tokens of the data (every split, oos queries included) whose word-embedding row in `base` is all zeros."""
    # The base travels with only the rows of the data's tokens (prepare.sh), and a row left out comes back as
    # zeros: a token the model cannot see, and a tell-tale of oos when only oos queries hold it.
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    embeddings = next(v for k, v in weights.load_weights(base).items() if k.endswith(weights.EMBEDDINGS))
    zero = (embeddings == 0).all(dim=1)
    ids: set[int] = set()
    for split in (data.train, data.validation, data.test):
        for row in tokenizer(split.texts, truncation=True, max_length=64)["input_ids"]:
            ids.update(row)
    return tokenizer.convert_ids_to_tokens(sorted(i for i in ids if zero[i]))


def split_scores(package: Path, data, device: str) -> dict:
    """Choose the oos rule on validation (as `compression calibrate`), then score validation and test with it."""
    from research.seeds import package_scores

    result = package_scores(package, data, device)
    return {**result.pop("rule"), **result}


def unpack_package(pack_dir: Path, dest: Path) -> None:
    """A fresh package folder from prepare.sh's layout (model.pack.safetensors + the small files)."""
    shutil.rmtree(dest, ignore_errors=True)
    weights.unpack_folder(pack_dir / "model.pack.safetensors", dest, pack_dir)


def check_rows(model_dir: Path, data, data_path: Path, source: Path) -> None:
    """Refuse a model that cannot see a token of the data (a stale or foreign pack)."""
    missing = missing_token_rows(model_dir, data)
    if missing:
        raise SystemExit(
            f"{len(missing)} tokens of {data_path} have no embedding row in {source} (e.g. {missing[:5]}): "
            "the pack is stale or was made from other data; run scripts/remote/prepare.sh again"
        )


def ship(
    name: str,
    packages: dict[str, tuple[Path, Path | None]],
    work: Path,
    out: Path,
    extra: list[Path],
    chunk: int | None = None,
) -> None:
    """Pack each package (vs its reference), tar them with the extra files, split into `chunk`-byte files under out."""
    from safetensors.torch import save_file

    chunk = chunk or CHUNK
    staging = work / f"ship-{name}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for pkg_name, (package, reference) in packages.items():
        folder = staging / pkg_name
        folder.mkdir()
        ref = weights.load_weights(reference) if reference else None
        save_file(weights.pack(weights.load_weights(package), ref), str(folder / "model.pack.safetensors"))
        for f in SMALL_FILES:
            if (package / f).is_file():
                shutil.copy2(package / f, folder / f)
    for f in extra:
        if f.exists():
            shutil.copy2(f, staging / f.name) if f.is_file() else shutil.copytree(f, staging / f.name)
    archive = work / f"{name}.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(staging, arcname=name)
    data = archive.read_bytes()
    for i in range(0, len(data), chunk):
        (out / f"{name}.tgz.{i // chunk:02d}").write_bytes(data[i : i + chunk])
    logger.info("shipped %s: %.1f MB in %d chunk(s)", name, len(data) / 1e6, -(-len(data) // chunk))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The stages to run, where things are, and each stage's settings."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stages", default="teacher,student")
    p.add_argument("--out", type=Path, required=True, help="folder whose files come back")
    p.add_argument("--work", type=Path, default=REPO / "runs" / "remote")
    p.add_argument("--data", type=Path, default=REPO / ".remote" / "data" / "clinc150" / "data_oos_plus.json")
    p.add_argument("--base-pack", type=Path, default=REPO / ".remote" / "base", help="packed base model folder")
    p.add_argument("--recipes", default="1e-4:10,5e-5:20,2e-4:10,1e-4:20", help="teacher LR:EPOCHS candidates")
    p.add_argument("--teacher-args", default="", help="extra finetune arguments (e.g. for smoke tests)")
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--trial-fraction", type=float, default=0.5)
    p.add_argument("--student-args", default="", help="extra distill arguments")
    p.add_argument("--prune-args", type=Path, help="file: one line of `compression prune` arguments per run")
    p.add_argument("--ship-pruned", default="", help="comma-separated pruned package names to ship (others: scores)")
    p.add_argument("--teacher-pack", type=Path, default=REPO / ".remote" / "teacher", help="packed teacher folder")
    p.add_argument("--seeds", default="42,43,44,45,46", help="seeds stage: comma-separated seeds")
    p.add_argument("--seed-epochs", type=float, default=None, help="seeds stage: epochs (default: the preset's)")
    p.add_argument(
        "--seed-args",
        default="--num-threads 2",
        help="seeds stage: extra `research seeds` arguments (default: 2 CPU threads per job, so that "
        "--max-parallel jobs do not oversubscribe the CPU cores)",
    )
    p.add_argument("--max-parallel", type=int, default=4, help="training jobs at a time")
    p.add_argument(
        "--chunk-mb", type=float, default=CHUNK / 2**20, help="size of each shipped file in MiB (transfer limits)"
    )
    return p.parse_args(argv)


class Run:
    """One remote run: its settings, data, device and the summary it writes as stages finish."""

    def __init__(self, args: argparse.Namespace) -> None:
        import torch

        from compression.data import load_clinc

        self.args, self.work, self.out = args, args.work, args.out
        self.work.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        logger.info("device %s (%s)", self.device, torch.cuda.get_device_name() if self.device == "cuda" else "no GPU")
        self.data = load_clinc(str(args.data))
        self.py = [sys.executable, "-m", "compression", "--data", str(args.data)]
        self.summary: dict = {"device": self.device, "torch": torch.__version__}
        self.summary_path = self.work / "summary.json"
        self.base, self.teacher = self.work / "base", self.work / "teacher"
        self.chunk = int(args.chunk_mb * 2**20)

    def save_summary(self) -> None:
        """summary.json in the work folder (shipped with each stage's results)."""
        self.summary_path.write_text(json.dumps(self.summary, indent=1))

    def ship(self, name: str, packages: dict[str, tuple[Path, Path | None]], extra: list[Path]) -> None:
        """`ship` into --out with this run's chunk size."""
        ship(name, packages, self.work, self.out, extra, self.chunk)

    def scores(self, package: Path) -> dict:
        """split_scores on this run's data and device."""
        return split_scores(package, self.data, self.device)


def stage_teacher(run: Run) -> None:
    """One teacher per recipe; the best on validation becomes the teacher, kept as the fp16 weights that travel."""
    from safetensors.torch import save_file

    from compression.packaging import refresh_manifest

    args, work, base = run.args, run.work, run.base
    if not (base / "model.safetensors").is_file():
        unpack_package(args.base_pack, base)
    check_rows(base, run.data, args.data, args.base_pack)
    start = time.time()
    candidates, commands = {}, []
    for recipe in args.recipes.split(","):
        lr, epochs = recipe.split(":")
        folder = work / f"teacher-lr{lr}-ep{epochs}"
        candidates[folder.name] = folder
        cmd = [*run.py, "finetune", "--preset", "full", "--base-model", str(base), "--learning-rate", lr]
        cmd += ["--epochs", epochs, "--output-dir", str(folder), "--name", "teacher", *shlex.split(args.teacher_args)]
        commands.append(cmd)
    run_parallel(commands, work / "logs", args.max_parallel)
    results = {n: run.scores(f) for n, f in candidates.items() if (f / "manifest.json").is_file()}
    for n, r in results.items():
        logger.info("%s: %s < %.3f val %s test %s", n, r["score"], r["threshold"], r["validation"], r["test"])
    best = max(results, key=lambda n: results[n]["validation"]["accuracy"])
    logger.info("chosen on validation accuracy: %s", best)
    run.summary["teacher"] = {"candidates": results, "chosen": best, "minutes": (time.time() - start) / 60}
    # The teacher used from here on is the one that travels back: fp16 weights rebuilt exactly as there.
    shutil.rmtree(run.teacher, ignore_errors=True)
    shutil.copytree(candidates[best], run.teacher)
    packed = weights.pack(weights.load_weights(run.teacher), weights.load_weights(base))
    save_file(weights.unpack(packed, weights.load_weights(base)), str(run.teacher / "model.safetensors"))
    refresh_manifest(run.teacher)
    run.save_summary()
    run.ship("teacher", {"teacher": (run.teacher, base)}, [run.summary_path, work / "logs"])


def stage_student(run: Run) -> None:
    """The searched, distilled student and its alpha = 1 twin."""
    args, work, student = run.args, run.work, run.work / "student"
    start = time.time()
    cmd = [*run.py, "distill", "--teacher", str(run.teacher), "--output-dir", str(student)]
    cmd += ["--trials", str(args.trials), "--trial-fraction", str(args.trial_fraction), "--baseline", "--no-finish"]
    run_parallel([cmd + shlex.split(args.student_args)], work / "logs", args.max_parallel)
    run.summary["student"] = {n: run.scores(work / n) for n in ("student", "student-nokd")}
    run.summary["student"]["minutes"] = (time.time() - start) / 60
    logger.info("students: %s", json.dumps(run.summary["student"]))
    run.save_summary()
    nokd = work / "student-nokd"
    run.ship("student", {"student": (student, run.teacher), "student-nokd": (nokd, run.teacher)}, [run.summary_path])


def stage_prune(run: Run) -> None:
    """One `compression prune` run per line of --prune-args; the --ship-pruned ones travel back."""
    args, work = run.args, run.work
    start = time.time()
    lines = [line for line in args.prune_args.read_text().splitlines() if line.strip()]
    run_parallel(
        [[*run.py, "prune", *shlex.split(line), "--no-finish"] for line in lines], work / "logs", args.max_parallel
    )
    pruned = {}
    for line in lines:
        parts = shlex.split(line)
        folder = Path(parts[parts.index("--output-dir") + 1])
        if (folder / "manifest.json").is_file():
            pruned[folder.name] = run.scores(folder)
            pruned[folder.name]["manifest_source"] = json.loads((folder / "manifest.json").read_text())["source"]
    run.summary["prune"] = pruned
    run.summary["prune_minutes"] = (time.time() - start) / 60
    run.save_summary()
    names = [n for n in args.ship_pruned.split(",") if n]
    run.ship("pruned", {n: (work / n, work / "student") for n in names}, [run.summary_path, work / "logs"])


def stage_seeds(run: Run) -> None:
    """The seed study on this run's teacher (or the packed one); its report is rewritten in --out as it goes."""
    from compression.packaging import refresh_manifest

    args, work, teacher = run.args, run.work, run.teacher
    start = time.time()
    if not (teacher / "manifest.json").is_file():
        if not (args.teacher_pack / "model.pack.safetensors").is_file():
            raise SystemExit(
                f"seeds: no teacher from this run and no pack at {args.teacher_pack}: "
                "run with --stages teacher,seeds, or TEACHER=DIR scripts/remote/prepare.sh first"
            )
        unpack_package(args.teacher_pack, teacher)
        check_rows(teacher, run.data, args.data, args.teacher_pack)
        refresh_manifest(teacher)  # the fp16 weights are not the file the manifest's hash describes
    # The report is rewritten in --out after every run: a run cut off by a time limit still returns it.
    research = [sys.executable, "-m", "research", "--data", str(args.data)]
    cmd = [*research, "seeds", "--teacher", str(teacher), "--output-dir", str(work / "seeds"), "--report-dir"]
    cmd += [str(run.out), "--parallel", str(args.max_parallel), "--seeds", *args.seeds.split(",")]
    if args.seed_epochs is not None:
        cmd += ["--epochs", str(args.seed_epochs)]
    run_parallel([cmd + shlex.split(args.seed_args)], work / "logs", 1)
    run.summary["seeds_minutes"] = (time.time() - start) / 60
    run.save_summary()
    shutil.copy2(run.summary_path, run.out / "summary.json")


def main(argv: list[str] | None = None) -> None:
    """Run the requested stages, in order."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    args = parse_args(argv)
    stages = set(args.stages.split(","))
    run = Run(args)
    if "teacher" in stages:
        stage_teacher(run)
    if "student" in stages:
        stage_student(run)
    if "prune" in stages and args.prune_args:
        stage_prune(run)
    if "seeds" in stages:
        stage_seeds(run)
    logger.info("summary: %s", json.dumps(run.summary))
    os.sync()


if __name__ == "__main__":
    main()
