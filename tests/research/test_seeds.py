"""Seed study: the paired statistics by hand, the job runner's bound, the CLI end to end on the tiny teacher."""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
import sys
import time
from pathlib import Path

import pytest

from research.cli import main
from research.seeds import (
    SeedStudyConfig,
    format_report,
    merge_studies,
    paired,
    run_parallel,
    summarize,
    t_quantile,
    teacher_id,
    write_study,
)


def record(seed: int, arm: str, test_acc: float, val_acc: float = 0.9, argmax_in_scope: float | None = None) -> dict:
    """A run's scores with every metric the summary reads."""
    block = {"accuracy": test_acc, "in_scope_accuracy": test_acc + 0.02, "oos_recall": 0.7, "oos_auroc": 0.9}
    argmax = {**block, "in_scope_accuracy": test_acc + 0.05 if argmax_in_scope is None else argmax_in_scope}
    val = {"accuracy": val_acc, "in_scope_accuracy": val_acc, "oos_recall": 0.8}
    return {"seed": seed, "arm": arm, "test": block, "test_argmax": argmax, "validation": val, "validation_argmax": val}


def test_t_quantile_matches_the_table() -> None:
    # Two-sided 95% critical values from any t table.
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)


def test_paired_interval_by_hand() -> None:
    diffs = [0.01, 0.02, 0.03]  # mean 0.02, sd 0.01
    m = paired(diffs, 0.95)
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert m["mean"] == pytest.approx(0.02)
    assert m["sd"] == pytest.approx(0.01)
    assert m["ci"] == pytest.approx([0.02 - half, 0.02 + half])
    assert (m["wins"], m["losses"], m["ties"]) == (3, 0, 0)


def test_verdict_reads_argmax_in_scope_needs_five_seeds_and_half_a_point() -> None:
    seeds = (1, 2, 3, 4, 5)
    a1 = [record(s, "a1", 0.90, argmax_in_scope=0.94) for s in seeds]
    helps = [record(s, "kd", 0.89, argmax_in_scope=0.946 + 0.001 * s) for s in seeds] + a1
    s = summarize(helps)
    assert s["verdict"].startswith("distillation measurably helps")
    assert s["metrics"]["test.accuracy"]["mean"] < 0  # the rule does not read thresholded accuracy
    assert next(iter(s["metrics"])) == "test_argmax.in_scope_accuracy"
    small = [record(s, "kd", 0.95, argmax_in_scope=0.942 + 0.0001 * s) for s in seeds] + a1
    assert summarize(small)["verdict"].startswith("not shown: the interval for the test arg-max in-scope accuracy")
    assert "below +0.5 pts" in summarize(small)["verdict"]
    hurts = [record(s, "kd", 0.90, argmax_in_scope=0.93 - 0.001 * s) for s in seeds] + a1
    assert summarize(hurts)["verdict"].startswith("distillation measurably hurts")
    # Same mean gain as `helps`, but one seed loses: the interval straddles zero.
    mixed = [
        record(s, "kd", 0.90, argmax_in_scope=v) for s, v in zip(seeds, (0.99, 0.93, 0.95, 0.96, 0.92), strict=True)
    ] + a1
    s = summarize(mixed)
    assert s["metrics"]["test_argmax.in_scope_accuracy"]["mean"] > 0.005
    assert s["verdict"].startswith("not shown")
    # A seed with one arm only is left out of the pairs: four pairs are not enough.
    four = [*helps[:4], *a1]
    s = summarize(four)
    assert s["seeds"] == [1, 2, 3, 4]
    assert s["verdict"].startswith("not enough seeds: 4 paired, the rule needs 5")


def test_oos_auroc_by_hand() -> None:
    from research.seeds import oos_auroc

    # in-scope evidence 0.9, 0.8, 0.4; oos 0.5, 0.1: pairs won 2 + 2 + 1 of 6.
    assert oos_auroc([0.9, 0.8, 0.4, 0.5, 0.1], [False, False, False, True, True]) == pytest.approx(5 / 6)
    assert oos_auroc([0.5, 0.5], [False, True]) == pytest.approx(0.5)  # a tie counts half
    assert math.isnan(oos_auroc([0.9, 0.8], [False, False]))


def test_accuracy_difference_splits_into_its_in_scope_and_oos_parts() -> None:
    def run(seed: int, arm: str, in_scope: float, oos: float) -> dict:
        r = record(seed, arm, 0.0)
        r["test"] = {"accuracy": 0.9 * in_scope + 0.1 * oos, "in_scope_accuracy": in_scope, "oos_recall": oos}
        return r

    # 90% of the test queries in scope. KD gains 1 point in-scope with every seed; oos recall swings +-10.
    runs = [run(1, "kd", 0.93, 0.80), run(1, "a1", 0.92, 0.70), run(2, "kd", 0.93, 0.60), run(2, "a1", 0.92, 0.70)]
    runs += [run(3, "kd", 0.94, 0.75), run(3, "a1", 0.93, 0.75)]
    s = summarize(runs)
    parts = s["accuracy_parts"]
    assert parts["in_scope_weight"] == pytest.approx(0.9)
    assert parts["in_scope"]["mean"] == pytest.approx(0.009)
    assert parts["in_scope"]["sd"] == pytest.approx(0.0, abs=1e-12)
    assert parts["oos_recall"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert parts["oos_recall"]["sd"] == pytest.approx(0.01)  # 0.1 x sd(+0.1, -0.1, 0)
    total = parts["in_scope"]["mean"] + parts["oos_recall"]["mean"]
    assert total == pytest.approx(s["metrics"]["test.accuracy"]["mean"])  # the parts add up exactly
    study = {"recipe": {"student": "x", "alpha": 0.1, "temperature": 2, "epochs": 1, "learning_rate": 1e-3}}
    study["recipe"] |= {"batch_size": 8, "extra_args": [], "teacher": "0" * 64}
    report = format_report({**study, "runs": runs, "summary": s})
    assert "90.00% x in-scope + 10.00% x oos recall" in report
    assert "+0.90 from in-scope accuracy (sd 0.00) and +0.00 from oos recall (sd 1.00)" in report
    # Records that are not weighted means of one split (e.g. hand-made ones) get no decomposition.
    assert summarize([record(s, a, 0.9 + 0.01 * s) for s in (1, 2, 3) for a in ("kd", "a1")])["accuracy_parts"] is None


def test_run_parallel_never_runs_more_than_asked_and_reports_failures(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    sleep = (
        "import sys, time; from pathlib import Path; p = Path(sys.argv[1]); "
        "t0 = time.time(); time.sleep(0.6); p.write_text(f'{t0} {time.time()}')"
    )
    commands = [[sys.executable, "-c", sleep, str(stamps / str(i))] for i in range(5)]
    commands.append([sys.executable, "-c", "import sys; sys.exit(3)"])
    ended: list[tuple[int, int]] = []
    results = run_parallel(
        commands, tmp_path / "logs", max_parallel=2, on_done=lambda i, code, _: ended.append((i, code))
    )
    assert [code for code, _ in results] == [0, 0, 0, 0, 0, 3]
    assert sorted(ended) == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (5, 3)]
    assert all(seconds >= 0.6 for _, seconds in results[:5])
    spans = [tuple(map(float, (stamps / str(i)).read_text().split())) for i in range(5)]
    most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most == 2  # two at a time: never three, and not one after another either
    assert len(list((tmp_path / "logs").glob("job-*.log"))) == 6
    with pytest.raises(ValueError, match="max_parallel"):
        run_parallel(commands, tmp_path / "logs", max_parallel=0)


def test_config_refuses_studies_that_cannot_answer(tiny_package: Path, tmp_path: Path) -> None:
    ok = {"teacher_dir": tiny_package, "output_dir": tmp_path}
    onnx_only = shutil.copytree(tiny_package, tmp_path / "onnx-only")
    (onnx_only / "model.safetensors").unlink()
    SeedStudyConfig(**ok).validate()
    bad = [
        ({"alpha": 1.0}, "alpha"),
        ({"seeds": (1, 1)}, "duplicates"),
        ({"seeds": ()}, "no seeds"),
        ({"parallel": 0}, "parallel"),
        ({"teacher_dir": tmp_path / "none"}, "no teacher package"),
        ({"teacher_dir": onnx_only}, "torch weights"),
        ({"extra_args": ("--seed", "3")}, "may not set"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            SeedStudyConfig(**{**ok, **change}).validate()
    # An interpreter without torch would start every job only to fail it: refused before the first.
    real = importlib.util.find_spec
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
        with pytest.raises(ValueError, match="torch is not installed"):
            SeedStudyConfig(**ok).validate()


def test_merge_joins_equal_recipes_and_refuses_others(tmp_path: Path) -> None:
    recipe = {"student": "layers:0", "alpha": 0.2, "temperature": 2.0, "epochs": 1.0, "learning_rate": 1e-3}
    recipe |= {"batch_size": 32, "extra_args": [], "teacher": "abc"}
    a = write_study([record(1, "kd", 0.91), record(1, "a1", 0.90)], recipe, tmp_path / "a", 0.95)
    b = write_study([record(s, arm, 0.9) for s in (2, 3) for arm in ("kd", "a1")], recipe, tmp_path / "b", 0.95)
    merged = merge_studies([tmp_path / "a" / "seeds.json", tmp_path / "b" / "seeds.json"], tmp_path / "m")
    assert merged["summary"]["seeds"] == [1, 2, 3]
    assert len(merged["runs"]) == len(a["runs"]) + len(b["runs"])
    assert (tmp_path / "m" / "seeds.md").read_text().count("| 2 | ") == 2
    write_study([record(4, "kd", 0.9)], {**recipe, "teacher": "other"}, tmp_path / "c", 0.95)
    with pytest.raises(ValueError, match="another recipe or teacher"):
        merge_studies([tmp_path / "a" / "seeds.json", tmp_path / "c" / "seeds.json"], tmp_path / "m")
    write_study([record(1, "kd", 0.5)], recipe, tmp_path / "d", 0.95)
    with pytest.raises(ValueError, match="seed 1 kd"):
        merge_studies([tmp_path / "a" / "seeds.json", tmp_path / "d" / "seeds.json"], tmp_path / "m")


@pytest.mark.slow
def test_cli_trains_both_arms_scores_them_resumes_and_refuses_another_recipe(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from app.backends.base import load_backend
    from app.package import read_manifest
    from compression.calibrate import CalibrateConfig, choose_rule
    from compression.data import load_clinc
    from compression.evaluate import scores, split_logits

    out = tmp_path / "study"

    def cli(seeds: list[str], alpha: str = "0.3") -> list[str]:
        args = ["--data", str(clinc_json), "seeds", "--teacher", str(tiny_package), "--output-dir", str(out)]
        args += ["--seeds", *seeds, "--student", "layers:1", "--alpha", alpha, "--temperature", "2"]
        args += ["--epochs", "1", "--learning-rate", "1e-3", "--parallel", "2", "--num-threads", "1"]
        return [*args, "--report-dir", str(tmp_path / "report")]

    args = cli(["1", "2"])
    assert main(args) == 0
    study = json.loads((out / "seeds.json").read_text())
    assert sorted((r["seed"], r["arm"]) for r in study["runs"]) == [(1, "a1"), (1, "kd"), (2, "a1"), (2, "kd")]
    for run in study["runs"]:
        folder = out / f"s{run['seed']}-{run['arm']}"
        hyper = read_manifest(folder).source["hyperparameters"]
        assert (hyper["alpha"], hyper["seed"]) == ((0.3 if run["arm"] == "kd" else 1.0), run["seed"])
    # Seeds change the result (else the study would measure nothing).
    kd = {r["seed"]: r for r in study["runs"] if r["arm"] == "kd"}
    assert (out / "s1-kd" / "model.safetensors").read_bytes() != (out / "s2-kd" / "model.safetensors").read_bytes()
    # The recorded scores are those of the serving torch backend with the rule calibrate would choose.
    data = load_clinc(str(clinc_json))
    backend = load_backend("torch", out / "s1-kd")
    score, threshold, _, _ = choose_rule(
        split_logits(backend, data.validation, 64), data.validation.labels, backend.manifest, CalibrateConfig()
    )
    assert (kd[1]["rule"]["score"], kd[1]["rule"]["threshold"]) == (score, pytest.approx(threshold, abs=1e-3))
    test = scores(split_logits(backend, data.test, 64), data.test.labels, backend.manifest, threshold, score)
    assert kd[1]["test"]["accuracy"] == pytest.approx(test["accuracy"], abs=0.02)
    a1 = {r["seed"]: r for r in study["runs"] if r["arm"] == "a1"}
    diffs = [kd[s]["validation"]["accuracy"] - a1[s]["validation"]["accuracy"] for s in (1, 2)]
    assert study["summary"]["metrics"]["validation.accuracy"]["diffs"] == pytest.approx(diffs)
    assert study["summary"]["verdict"].startswith("not enough seeds")
    assert "**Verdict**" in capsys.readouterr().out
    assert json.loads((tmp_path / "report" / "seeds.json").read_text()) == study
    assert sorted(p.name for p in (out / "logs").glob("*.log")) == ["s1-a1.log", "s1-kd.log", "s2-a1.log", "s2-kd.log"]

    # Run again with one more seed: only its two runs train.
    stamp = (out / "s1-kd" / "model.safetensors").stat().st_mtime_ns
    time.sleep(0.01)
    assert main(cli(["1", "2", "3"])) == 0
    assert (out / "s1-kd" / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(json.loads((out / "seeds.json").read_text())["runs"]) == 6
    # One teacher pass for the whole study: seed 3's KD run read the logits the first KD run cached.
    assert len(list((out / "teacher-logits").glob("*.safetensors"))) == 1
    assert "read from the logits cache" in read_manifest(out / "s3-kd").source["teacher_logits"]
    assert read_manifest(out / "s3-a1").source["teacher_logits"].startswith("not computed")

    with pytest.raises(SystemExit, match="another recipe"):
        main(cli(["1"], alpha="0.5"))


def test_teacher_id_is_the_weights_file_not_the_manifest(package_copy: Path, tiny_package: Path) -> None:
    assert teacher_id(package_copy) == teacher_id(tiny_package)
    weights = package_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1  # one bit of one weight: the manifest is unchanged, the teacher is not
    weights.write_bytes(bytes(data))
    assert teacher_id(package_copy) != teacher_id(tiny_package)


def test_runs_get_every_global_data_option_of_the_study(tmp_path: Path) -> None:
    """A study on data with its own oos label and domains trains every run on the same reading of that data."""
    from research.cli import build_parser
    from research.commands.seeds import config_from_args
    from research.seeds.study import Run, command

    domains = tmp_path / "domains.json"
    argv = ["--data", "mine.csv", "--oos-label", "none_of_these", "--domains", str(domains), "seeds"]
    cfg = config_from_args(build_parser().parse_args([*argv, "--teacher", str(tmp_path), "--seeds", "1", "2"]))
    cmd = command(cfg, Run(seed=1, arm="kd", alpha=0.5, folder=tmp_path / "run"))
    globals_ = cmd[cmd.index("-m") + 2 : cmd.index("distill")]
    assert globals_ == ["--data", "mine.csv", "--oos-label", "none_of_these", "--domains", str(domains)]
