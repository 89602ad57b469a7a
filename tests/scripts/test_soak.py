"""scripts/soak.py against the real server (fake backend): the in-flight cap skips arrivals and fails the verdict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scripts.soak import main


def soak(package: Path, out: Path, *extra: str) -> tuple[int, dict]:
    """A 3 s soak on the fake backend; its exit code and JSON report."""
    args = ["--package", str(package), "--backend", "fake", "--duration", "3", "--warmup", "1", "--window", "1"]
    args += ["--capacity-seconds", "1", "--concurrency", "4", "--out", str(out), *extra]
    code = main(args)
    return code, json.loads(out.read_text())


def test_arrivals_beyond_the_cap_are_skipped_and_fail_the_run(fake_package: Path, tmp_path: Path) -> None:
    # Five times the measured capacity with one request allowed in flight: most arrivals find it busy.
    code, report = soak(fake_package, tmp_path / "over.json", "--load", "5", "--max-in-flight", "1")
    skipped = sum(w["skipped"] for w in report["windows"])
    answered = sum(w["ok"] + sum(w["errors"].values()) for w in report["windows"])
    assert skipped > 0
    assert report["verdict"]["skipped"] == skipped
    assert report["verdict"]["checks"]["no_skipped_arrivals"] is False
    assert code == 1
    assert report["sent"] + skipped == report["due"]
    assert answered == report["sent"]  # every request sent was answered or counted as an error


def test_a_run_within_capacity_skips_nothing(fake_package: Path, tmp_path: Path) -> None:
    _, report = soak(fake_package, tmp_path / "ok.json", "--load", "0.3")
    assert report["verdict"]["skipped"] == 0
    assert report["verdict"]["checks"]["no_skipped_arrivals"] is True
    assert report["verdict"]["errors"] == 0
    assert report["sent"] == report["due"] > 0


def test_a_cap_below_one_is_refused(fake_package: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--package", str(fake_package), "--max-in-flight", "0", "--out", str(tmp_path / "x.json")])
    assert exc.value.code == 2
