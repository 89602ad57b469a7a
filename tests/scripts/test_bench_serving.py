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


def candidates_source(path: Path) -> str:
    """The DATA_CANDIDATES expression of a module, as source."""
    import ast

    tree = ast.parse(path.read_text())
    (node,) = [
        n for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "DATA_CANDIDATES"
    ]
    return ast.unparse(node.value)


def test_the_benchmarks_and_the_load_test_look_for_clinc150_where_the_pipeline_does() -> None:
    from compression.data.clinc import LOCAL_CANDIDATES
    from scripts import bench_serving

    assert bench_serving.DATA_CANDIDATES == LOCAL_CANDIDATES
    # The locustfile is not imported (locust patches the process with gevent): its expression must be the same.
    locustfile = REPO / "loadtests" / "locustfile.py"
    assert candidates_source(locustfile) == candidates_source(Path(bench_serving.__file__))
