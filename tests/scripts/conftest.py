"""Fixtures shared by the script tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.package import read_manifest, write_manifest


@pytest.fixture
def fake_package(tiny_package: Path, tmp_path: Path) -> Path:
    """A manifest-only package: enough for the weight-free fake backend."""
    manifest = read_manifest(tiny_package)
    manifest.metrics = {}
    (tmp_path / "pkg").mkdir()
    write_manifest(tmp_path / "pkg", manifest)
    return tmp_path / "pkg"
