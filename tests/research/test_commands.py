"""The research commands: a working --help and option defaults read from their config dataclasses."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pytest

from research.cli import build_parser, main
from research.commands import COMMANDS
from research.frontier import FrontierConfig
from research.seeds import SeedStudyConfig


@pytest.mark.parametrize("name", ["frontier", "feature-scores", "seeds"])
def test_help_of_every_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert list(COMMANDS) == ["frontier", "feature-scores", "seeds"]
    with pytest.raises(SystemExit) as exc:
        main([name, "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: python -m research {name} ")


def test_seeds_defaults_are_the_study_config() -> None:
    args = build_parser().parse_args(["seeds"])
    assert asdict(COMMANDS["seeds"].config_from_args(args)) == asdict(SeedStudyConfig())


def test_frontier_defaults_are_the_frontier_config(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text("{}")
    args = build_parser().parse_args(["frontier", str(tmp_path)])
    assert COMMANDS["frontier"].config_from_args(args) == FrontierConfig(packages=(tmp_path,))


def test_seeds_changed_default_reaches_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SeedStudyConfig, "confidence", 0.9)
    assert build_parser().parse_args(["seeds"]).confidence == 0.9
