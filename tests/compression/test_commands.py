"""Every command: the one table, a working --help, option defaults read from its config dataclass, a torch-free CLI."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from compression.augment import AugmentConfig
from compression.benchmark import BenchmarkConfig
from compression.calibrate import CalibrateConfig
from compression.cli import build_parser, main
from compression.commands import COMMANDS
from compression.commands.common import DEFAULT_PACKAGE, quant_settings
from compression.config import PRESETS, FinetuneConfig, PruneConfig
from compression.distill import DistillConfig
from compression.evaluate import EvalConfig
from compression.export import ExportConfig
from compression.quantize import QuantizeConfig
from compression.ship import ShipConfig

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["finetune", "export", "quantize", "calibrate", "evaluate", "distill", "prune", "finish", "benchmark"]
NAMES += ["ship", "build"]


def subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of one subcommand."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def test_one_table_holds_every_command_with_its_hooks() -> None:
    assert list(COMMANDS) == NAMES
    for name, module in COMMANDS.items():
        assert module.__name__ == f"compression.commands.{name}"
        assert module.HELP
        assert callable(module.add_arguments)
        assert callable(module.run)


@pytest.mark.parametrize("name", NAMES)
def test_help_of_every_command_lists_its_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m compression {name} ")
    shown = [a for a in subparser(build_parser(), name)._actions if a.help != argparse.SUPPRESS]
    options = [s for a in shown for s in a.option_strings]
    assert len(options) > 1
    assert [s for s in options if s not in out] == []


@pytest.mark.parametrize("name", NAMES)
def test_help_shows_every_default(name: str) -> None:
    parser = subparser(build_parser(), name)
    formatter = parser._get_formatter()
    for action in parser._actions:
        if not action.option_strings or argparse.SUPPRESS in (action.help, action.default) or action.dest == "help":
            continue
        help_text = formatter._expand_help(action) if action.help else ""
        if action.default not in (None, False, "") or (name in {"finetune", "build"} and action.dest == "epochs"):
            assert "default" in help_text, f"{name} {action.option_strings[0]}: {help_text!r}"


def test_finetune_help_names_each_presets_value() -> None:
    parser = subparser(build_parser(), "finetune")
    epochs = next(a for a in parser._actions if a.dest == "epochs")
    for preset, values in PRESETS.items():
        assert f"{values['epochs']} with {preset}" in epochs.help


# (command, required arguments, the config its defaults must give)
DEFAULTS: list[tuple[str, list[str], Callable[[], object]]] = [
    ("finetune", [], lambda: FinetuneConfig(**PRESETS["quick"])),  # finetune's options only override the preset
    ("export", [], ExportConfig),
    ("quantize", [], QuantizeConfig),
    ("calibrate", [], CalibrateConfig),
    ("evaluate", [], EvalConfig),
    # One --augment-prob sets the three edit probabilities; the augmentation follows --seed.
    ("distill", [], lambda: replace(DistillConfig(), augment=replace(AugmentConfig(), seed=DistillConfig.seed))),
    ("prune", [], PruneConfig),
    ("benchmark", [], BenchmarkConfig),
    ("ship", ["--output-dir", "slim"], lambda: ShipConfig(DEFAULT_PACKAGE, Path("slim"))),
]


@pytest.mark.parametrize(("name", "required", "expected"), DEFAULTS, ids=[d[0] for d in DEFAULTS])
def test_option_defaults_are_the_config_defaults(
    name: str, required: list[str], expected: Callable[[], object]
) -> None:
    args = build_parser().parse_args([name, *required])
    assert asdict(COMMANDS[name].config_from_args(args)) == asdict(expected())


@pytest.mark.parametrize("name", ["quantize", "distill", "prune", "finish", "build"])
def test_quantization_defaults_are_quantize_configs(name: str) -> None:
    args = build_parser().parse_args([name])
    assert QuantizeConfig(Path("p"), **quant_settings(args)) == QuantizeConfig(Path("p"))


@pytest.mark.parametrize("name", ["export", "quantize", "calibrate", "evaluate", "finish", "ship"])
def test_package_default_is_the_teacher_finetune_writes(name: str) -> None:
    required = ["--output-dir", "slim"] if name == "ship" else []
    assert build_parser().parse_args([name, *required]).package == FinetuneConfig.output_dir


@pytest.mark.parametrize(
    ("cls", "field", "name", "dest", "value"),
    [
        (DistillConfig, "alpha", "distill", "alpha", 0.25),
        (DistillConfig, "batch_size", "distill", "batch_size", 7),
        (PruneConfig, "sparsity", "prune", "sparsity", 0.55),
        (QuantizeConfig, "graph", "quantize", "quant_graph", "plain"),
        (EvalConfig, "latency_runs", "evaluate", "latency_runs", 3),
    ],
)
def test_a_changed_config_default_reaches_the_cli(
    cls: type, field: str, name: str, dest: str, value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The CLI reads the dataclass when it builds the parser: no second copy of the value to keep in step.
    monkeypatch.setattr(cls, field, value)
    assert getattr(build_parser().parse_args([name]), dest) == value


def test_prune_takes_the_option_names_of_the_other_commands() -> None:
    # --package and --teacher as everywhere else; the older --model, --distill-from and --lr still parse.
    prune = COMMANDS["prune"]
    names = ["prune", "--package", "a", "--teacher", "t", "--learning-rate", "0.001"]
    aliases = ["prune", "--model", "a", "--distill-from", "t", "--lr", "0.001"]
    new, old = (prune.config_from_args(build_parser().parse_args(argv)) for argv in (names, aliases))
    assert asdict(new) == asdict(old)
    assert (new.model_dir, new.teacher_dir, new.learning_rate) == (Path("a"), Path("t"), 0.001)
    usage = subparser(build_parser(), "prune").format_usage()
    assert "--package" in usage
    assert "--teacher" in usage
    assert "--model" not in usage


def test_usage_errors_exit_2_with_the_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--augment-prob", "0.6"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m compression")
    assert "error: --augment-copies must be >= 0 and --augment-prob in [0, 0.5)" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["calibrate", "--max-in-scope-loss", "5"],
            "--max-in-scope-loss is a share of in-scope accuracy in [0, 1), got 5",
        ),
        (["calibrate", "--max-in-scope-loss", "-0.1"], "in [0, 1), got -0.1"),
        (["evaluate", "--latency-runs", "0"], "--latency-runs must be at least 1, got 0"),
        (["evaluate", "--num-threads", "-2"], "--num-threads must be at least 0, got -2"),
        (["evaluate", "--backends", "onnx_int8"], "argument --backends: invalid choice: 'onnx_int8'"),
        (["benchmark", "--latency-runs", "0"], "--latency-runs must be at least 1, got 0"),
        (["benchmark", "--warmup-runs", "-1"], "--warmup-runs must be at least 0, got -1"),
        (["benchmark", "--rounds", "0"], "--rounds must be at least 1, got 0"),
        (["finetune", "--epochs", "0"], "--epochs must be in (0, 10000], got 0.0"),
        (["finetune", "--epochs", "1e9"], "--epochs must be in (0, 10000], got 1000000000.0"),
        (["finetune", "--learning-rate", "-1"], "--learning-rate must be in (0, 1), got -1.0"),
        (["finetune", "--learning-rate", "inf"], "--learning-rate must be in (0, 1), got inf"),
        (["finetune", "--learning-rate", "nan"], "--learning-rate must be in (0, 1), got nan"),
        (["finetune", "--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
        (["finetune", "--max-length", "100000"], "--max-length must be in [4, 512]"),
        (["build", "--preset", "quick", "--batch-size", "0"], "--batch-size must be >= 1, got 0"),
        (["finetune", "--max-length", "2"], "--max-length must be in [4, 512]"),
        (["distill", "--alpha", "1.5"], "--alpha weighs the label loss against the teacher's: it must be in [0, 1]"),
        (["distill", "--temperature", "0"], "--temperature must be > 0, got 0.0"),
        (["distill", "--trials", "-1"], "--trials must be at least 0"),
        (
            ["distill", "--trials", "1", "--trial-fraction", "2"],
            "--trial-fraction is a share of the train split in (0, 1]",
        ),
        (["build", "--student-trials", "1", "--trial-fraction", "0"], "--trial-fraction is a share"),
        (["distill", "--epochs", "-1"], "--epochs must be in (0, 10000], got -1.0"),
        (["distill", "--student", "layers:1,1"], "--student '1,1': give distinct layer indices"),
        (["distill", "--student", "layers:"], "--student '': give distinct layer indices"),
        (["distill", "--student", "x", "--student-layers", "0,-1"], "--student-layers '0,-1': give distinct"),
        (
            ["distill", "--student", "layers:0", "--student-layers", "1"],
            "--student-layers picks layers of a base-model",
        ),
    ],
)
def test_out_of_range_options_are_usage_errors(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_a_student_deeper_than_its_teacher_is_a_usage_error(
    tiny_package: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    depth = json.loads((tiny_package / "config.json").read_text())["num_hidden_layers"]
    with pytest.raises(SystemExit) as exc:
        main(["distill", "--teacher", str(tiny_package), "--student", f"layers:0,{depth}"])
    assert exc.value.code == 2
    assert f"the teacher {tiny_package} has layers 0-{depth - 1}" in capsys.readouterr().err
    args = build_parser().parse_args(["distill", "--teacher", str(tiny_package), "--student", f"layers:0,{depth - 1}"])
    assert COMMANDS["distill"].config_from_args(args).student == f"layers:0,{depth - 1}"  # the deepest layer is fine


def test_cli_and_its_parsers_import_no_torch() -> None:
    code = (
        "import sys, compression.cli, research.cli\n"
        "compression.cli.build_parser(); research.cli.build_parser()\n"
        "heavy = ('torch', 'transformers', 'optimum', 'onnxruntime', 'optuna')\n"
        "print(compression.cli.__file__); print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    where, heavy = out.stdout.splitlines()
    assert Path(where).is_relative_to(ROOT)
    assert heavy == "[]"


@pytest.mark.parametrize(
    ("error", "status", "message"),
    [
        (ValueError("Seed must be between 0 and 2**32 - 1"), 1, "boom: error: Seed must be between 0 and 2**32 - 1"),
        (OSError(28, "No space left on device"), 1, "boom: error: [Errno 28] No space left on device"),
        (RuntimeError("set_num_threads expects\na positive integer"), 1, "expects a positive integer (-v shows"),
        (KeyboardInterrupt(), 130, "boom: interrupted"),
    ],
    ids=["value", "os", "runtime", "ctrl-c"],
)
def test_a_library_error_ends_a_command_with_one_line(
    error: BaseException, status: int, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import types

    def run(args) -> int:
        raise error

    boom = types.SimpleNamespace(HELP="fails", add_arguments=lambda p: None, run=run)
    with pytest.raises(SystemExit) as exc:
        main(["boom"], commands={"boom": boom})
    shown = str(exc.value.code) if isinstance(exc.value.code, str) else capsys.readouterr().err
    assert message in shown
    assert (exc.value.code if isinstance(exc.value.code, int) else 1) == status
    assert "\n" not in shown.strip()
    if status == 1:  # -v keeps the traceback for a bug report
        with pytest.raises(type(error)):
            main(["boom", "-v"], commands={"boom": boom})
