"""Run the training-heavy compression steps on a GPU machine, then pack the results for the trip back.

The same `python -m compression` commands as on a CPU, with CUDA picked up automatically. Stages:

    teacher  fine-tune one teacher per recipe (in parallel processes on the one GPU), calibrate each on the
             validation split and keep the recipe with the best validation accuracy at its own oos rule
    student  Optuna search + distilled student + the same student without the teacher (alpha = 1)
    prune    `python -m compression prune` runs (one per line of --prune-args), in parallel
    seeds    `python -m research seeds`: the KD student and its alpha = 1 twin for each of --seeds; only the
             report (seeds.json, seeds.md) comes back. The teacher is this call's (stage teacher) or the one
             prepare.sh packed (TEACHER=DIR)

On the GPU machine (Python 3.12 with its own torch; the pinned stack from .remote/whl goes first on the path),
with `.remote` carried:

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .remote/whl/*.whl && \
    PYTHONPATH=/tmp/site:. PYTHONUNBUFFERED=1 python3 scripts/remote/train.py --stages seeds --out "$OUT" \
        --seeds 42,43,44,45,46 --seed-epochs 20 --max-parallel 5

Jobs run at most --max-parallel at a time: small HF Trainer jobs are bound by Python overhead, and on one H100
four at once ran 21 ms per step each, eleven 53 ms (docs/experiments.md).

Every choice uses the validation split only; test-split scores are printed for information. Weights travel
back as fp16 packs (scripts/remote/weights.py) in split tar chunks under --out; scripts/remote/fetch.sh
rebuilds full packages from them here.
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
CHUNK = 15 * 1024 * 1024


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


def ship(name: str, packages: dict[str, tuple[Path, Path | None]], work: Path, out: Path, extra: list[Path]) -> None:
    """Pack each package (vs its reference), tar them with the extra files, split into chunks under out."""
    from safetensors.torch import save_file

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
    for i in range(0, len(data), CHUNK):
        (out / f"{name}.tgz.{i // CHUNK:02d}").write_bytes(data[i : i + CHUNK])
    logger.info("shipped %s: %.1f MB in %d chunk(s)", name, len(data) / 1e6, -(-len(data) // CHUNK))


def main() -> None:
    """Run the requested stages."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
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
        help="seeds stage: extra `research seeds` arguments (default: 2 CPU threads per job, so that 16 cores "
        "are not oversubscribed)",
    )
    p.add_argument("--max-parallel", type=int, default=4, help="training jobs at a time")
    args = p.parse_args()
    stages = set(args.stages.split(","))
    work, out = args.work, args.out
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)

    import torch

    from compression.data import load_clinc

    device = "cuda" if torch.cuda.is_available() else "cpu"
    logger.info("device %s (%s)", device, torch.cuda.get_device_name() if device == "cuda" else "no GPU")
    data = load_clinc(str(args.data))
    py = [sys.executable, "-m", "compression", "--data", str(args.data)]
    summary: dict = {"device": device, "torch": torch.__version__}
    summary_path = work / "summary.json"
    base = work / "base"
    if "teacher" in stages and not (base / "model.safetensors").is_file():
        unpack_package(args.base_pack, base)
    if "teacher" in stages:
        check_rows(base, data, args.data, args.base_pack)
    teacher = work / "teacher"

    if "teacher" in stages:
        start = time.time()
        candidates = {}
        commands = []
        for recipe in args.recipes.split(","):
            lr, epochs = recipe.split(":")
            folder = work / f"teacher-lr{lr}-ep{epochs}"
            candidates[folder.name] = folder
            commands.append(
                [
                    *py,
                    "finetune",
                    "--preset",
                    "full",
                    "--base-model",
                    str(base),
                    "--learning-rate",
                    lr,
                    "--epochs",
                    epochs,
                    "--output-dir",
                    str(folder),
                    "--name",
                    "teacher",
                    *shlex.split(args.teacher_args),
                ]
            )
        run_parallel(commands, work / "logs", args.max_parallel)
        results = {n: split_scores(f, data, device) for n, f in candidates.items() if (f / "manifest.json").is_file()}
        for n, r in results.items():
            logger.info("%s: %s < %.3f val %s test %s", n, r["score"], r["threshold"], r["validation"], r["test"])
        best = max(results, key=lambda n: results[n]["validation"]["accuracy"])
        logger.info("chosen on validation accuracy: %s", best)
        summary["teacher"] = {"candidates": results, "chosen": best, "minutes": (time.time() - start) / 60}
        # The teacher used from here on is the one that travels back: fp16 weights rebuilt exactly as there.
        from safetensors.torch import save_file

        shutil.rmtree(teacher, ignore_errors=True)
        shutil.copytree(candidates[best], teacher)
        packed = weights.pack(weights.load_weights(teacher), weights.load_weights(base))
        save_file(weights.unpack(packed, weights.load_weights(base)), str(teacher / "model.safetensors"))
        from compression.packaging import refresh_manifest

        refresh_manifest(teacher)
        summary_path.write_text(json.dumps(summary, indent=1))
        ship("teacher", {"teacher": (teacher, base)}, work, out, [summary_path, work / "logs"])

    if "student" in stages:
        start = time.time()
        student = work / "student"
        run_parallel(
            [
                [
                    *py,
                    "distill",
                    "--teacher",
                    str(teacher),
                    "--output-dir",
                    str(student),
                    "--trials",
                    str(args.trials),
                    "--trial-fraction",
                    str(args.trial_fraction),
                    "--baseline",
                    "--no-finish",
                    *shlex.split(args.student_args),
                ]
            ],
            work / "logs",
            args.max_parallel,
        )
        summary["student"] = {n: split_scores(work / n, data, device) for n in ("student", "student-nokd")}
        summary["student"]["minutes"] = (time.time() - start) / 60
        logger.info("students: %s", json.dumps(summary["student"]))
        summary_path.write_text(json.dumps(summary, indent=1))
        ship(
            "student",
            {"student": (student, teacher), "student-nokd": (work / "student-nokd", teacher)},
            work,
            out,
            [summary_path],
        )

    if "prune" in stages and args.prune_args:
        start = time.time()
        lines = [line for line in args.prune_args.read_text().splitlines() if line.strip()]
        commands = [[*py, "prune", *shlex.split(line), "--no-finish"] for line in lines]
        run_parallel(commands, work / "logs", args.max_parallel)
        pruned = {}
        for line in lines:
            parts = shlex.split(line)
            folder = Path(parts[parts.index("--output-dir") + 1])
            if (folder / "manifest.json").is_file():
                pruned[folder.name] = split_scores(folder, data, device)
                pruned[folder.name]["manifest_source"] = json.loads((folder / "manifest.json").read_text())["source"]
        summary["prune"] = pruned
        summary["prune_minutes"] = (time.time() - start) / 60
        summary_path.write_text(json.dumps(summary, indent=1))
        names = [n for n in args.ship_pruned.split(",") if n]
        ship("pruned", {n: (work / n, work / "student") for n in names}, work, out, [summary_path, work / "logs"])
    if "seeds" in stages:
        start = time.time()
        if not (teacher / "manifest.json").is_file():
            if not (args.teacher_pack / "model.pack.safetensors").is_file():
                raise SystemExit(
                    f"seeds: no teacher from this call and no pack at {args.teacher_pack}: "
                    "run with --stages teacher,seeds, or TEACHER=DIR scripts/remote/prepare.sh first"
                )
            unpack_package(args.teacher_pack, teacher)
            check_rows(teacher, data, args.data, args.teacher_pack)
            from compression.packaging import refresh_manifest

            refresh_manifest(teacher)  # the fp16 weights are not the file the manifest's hash describes
        study = work / "seeds"
        # The report is rewritten in --out after every run: a call cut off by its time limit still returns it.
        research = [sys.executable, "-m", "research", "--data", str(args.data)]
        cmd = [*research, "seeds", "--teacher", str(teacher), "--output-dir", str(study), "--report-dir", str(out)]
        cmd += ["--parallel", str(args.max_parallel), "--seeds", *args.seeds.split(",")]
        if args.seed_epochs is not None:
            cmd += ["--epochs", str(args.seed_epochs)]
        run_parallel([cmd + shlex.split(args.seed_args)], work / "logs", 1)
        summary["seeds_minutes"] = (time.time() - start) / 60
        summary_path.write_text(json.dumps(summary, indent=1))
        shutil.copy2(summary_path, out / "summary.json")
    logger.info("summary: %s", json.dumps(summary))
    os.sync()


if __name__ == "__main__":
    main()
