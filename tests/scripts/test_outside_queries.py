"""scripts/outside_queries.py counts refusals with the package's own rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from app.package import read_manifest, update_manifest
from scripts.outside_queries import QUERIES, main, refused


def test_counts_follow_the_threshold(package_copy: Path, capsys: pytest.CaptureFixture[str]) -> None:
    manifest = read_manifest(package_copy)
    # A max-logit threshold above every logit refuses everything; one below every logit refuses only
    # the queries whose arg-max is the oos label itself.
    everything = package_copy.parent / "all"
    shutil.copytree(package_copy, everything)
    update_manifest(everything, oos_score="max_logit", oos_threshold=1e9)
    update_manifest(package_copy, oos_score="max_logit", oos_threshold=-1e9)
    caught_all, missed_all = refused(everything, "onnx")
    caught_none, missed_none = refused(package_copy, "onnx")
    assert caught_all == len(QUERIES)
    assert missed_all == []
    assert {q for q, _ in missed_none} <= set(QUERIES)
    assert caught_none == len(QUERIES) - len(missed_none)
    assert all(intent in manifest.labels for _, intent in missed_none)
    assert main([str(everything), "--backend", "onnx"]) == 0
    assert f"{len(QUERIES)}/{len(QUERIES)} oos; answered: none" in capsys.readouterr().out
