"""scripts/bench_serving.py writes package paths that say nothing about the machine it ran on."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.bench_serving import REPO, shown


def test_paths_inside_the_repository_are_relative() -> None:
    assert shown(REPO / "artifacts" / "student") == "artifacts/student"


def test_relative_paths_are_taken_from_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert shown(Path("artifacts/teacher")) == "artifacts/teacher"


def test_paths_outside_the_repository_keep_only_their_name(tmp_path: Path) -> None:
    package = tmp_path / "elsewhere" / "my-package"
    assert shown(package) == "my-package"
    assert str(tmp_path) not in shown(package)
