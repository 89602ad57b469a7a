"""Fixtures for the deployment-file tests (Dockerfile, compose, Prometheus, Grafana)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


def _find_tool(name: str) -> str | None:
    """A command on PATH or next to this interpreter (the venv's bin/, where pip puts hadolint)."""
    return shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


@pytest.fixture(scope="session")
def find_tool() -> Callable[[str], str | None]:
    """`find_tool(name)`: the path of a command (also looked for in the venv's bin/), or None."""
    return _find_tool


@pytest.fixture(scope="session")
def dashboard_queries() -> ModuleType:
    """scripts/dashboard_queries.py as a module (scripts/ is not a package)."""
    path = REPO_ROOT / "scripts" / "dashboard_queries.py"
    spec = importlib.util.spec_from_file_location("dashboard_queries", path)
    assert spec is not None, path
    assert spec.loader is not None, path
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module
