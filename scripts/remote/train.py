"""Run the training-heavy compression steps on a GPU machine, then pack the results for the trip back.

The same `python -m compression` commands as on a CPU, with CUDA picked up automatically. Stages:

    teacher  fine-tune one teacher per recipe (in parallel processes on the one GPU), calibrate each on the
             validation split and keep the recipe with the best validation accuracy at its own oos rule
    student  Optuna search + distilled student + the same student without the teacher (alpha = 1)
    prune    `python -m compression prune` runs (one per line of --prune-args), in parallel

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
import subprocess
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


def run_parallel(commands: list[list[str]], logs: Path) -> None:
    """Start every command at once (the GPU is far from busy with one small model), wait for all."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = []
    for i, cmd in enumerate(commands):
        log = open(logs / f"{int(time.time())}-{i}.log", "w")  # noqa: SIM115 - closed below
        logger.info("start: %s", shlex.join(cmd))
        procs.append((subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT), log, cmd))
    failed = []
    for proc, log, cmd in procs:
        if proc.wait() != 0:
            failed.append(shlex.join(cmd))
        log.close()
        tail = Path(log.name).read_text().splitlines()[-3:]
        logger.info("done (%d): %s | %s", proc.returncode, shlex.join(cmd[3:8]), " / ".join(tail))
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
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from app.package import read_manifest
    from compression.calibrate import CalibrateConfig, choose_rule
    from compression.evaluate import scores

    manifest = read_manifest(package)
    tok = AutoTokenizer.from_pretrained(package)
    model = AutoModelForSequenceClassification.from_pretrained(package).to(device).eval()

    def logits(texts: list[str]) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), 512):
                enc = tok(texts[i : i + 512], truncation=True, max_length=64, padding=True, return_tensors="pt")
                out.append(model(**enc.to(device)).logits.float().cpu().numpy())
        return np.concatenate(out)

    score, threshold, val, _ = choose_rule(
        logits(data.validation.texts), data.validation.labels, manifest, CalibrateConfig()
    )
    test = scores(logits(data.test.texts), data.test.labels, manifest, threshold, score)
    return {"score": score, "threshold": threshold, "validation": val, "test": test}


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
    if not (base / "model.safetensors").is_file():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        for f in args.base_pack.iterdir():
            if f.name != "model.pack.safetensors":
                shutil.copy2(f, base / f.name)
        from safetensors.torch import load_file, save_file

        save_file(
            weights.unpack(load_file(str(args.base_pack / "model.pack.safetensors"))), str(base / "model.safetensors")
        )
    missing = missing_token_rows(base, data)
    if missing:
        raise SystemExit(
            f"{len(missing)} tokens of {args.data} have no embedding row in {args.base_pack} (e.g. {missing[:5]}): "
            "the pack is stale or was made from other data; run scripts/remote/prepare.sh again"
        )
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
        run_parallel(commands, work / "logs")
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
        run_parallel([[*py, "prune", *shlex.split(line), "--no-finish"] for line in lines], work / "logs")
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
    logger.info("summary: %s", json.dumps(summary))
    os.sync()


if __name__ == "__main__":
    main()
