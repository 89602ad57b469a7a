"""A package's output folder is replaced when the package is written: no command may replace anything else."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from compression.cli import main
from compression.packaging import OutputDirError, check_output_dir


@pytest.fixture
def workspace(tiny_package: Path, tmp_path: Path) -> Path:
    """A folder of packages and notes, the kind a user points --output-dir at by mistake."""
    ws = tmp_path / "artifacts"
    shutil.copytree(tiny_package, ws / "teacher")
    (ws / "notes.txt").write_text("keep me")
    return ws


def intact(ws: Path) -> bool:
    """The workspace as the fixture made it."""
    return (ws / "notes.txt").read_text() == "keep me" and (ws / "teacher" / "manifest.json").is_file()


@pytest.mark.parametrize(
    "argv",
    [
        ["distill", "--output-dir", "{ws}"],
        ["distill", "--output-dir", "{ws}/student", "--baseline"],  # its alpha = 1 twin goes to {ws}/student-nokd
        ["finetune", "--output-dir", "{ws}"],
        ["build", "--preset", "quick", "--output-dir", "{ws}"],
        # full builds a student and its alpha = 1 twin beside the teacher: {ws}/student and {ws}/student-nokd
        ["build", "--preset", "full", "--output-dir", "{ws}/teacher2", "--max-train-samples", "8", "--epochs", "0.01"],
        ["prune", "--model", "{ws}/teacher", "--output-dir", "{ws}"],
        ["ship", "--package", "{ws}/teacher", "--output-dir", "{ws}"],
    ],
    ids=["distill", "distill-baseline", "finetune", "build", "build-student-baseline", "prune", "ship"],
)
def test_no_command_writes_a_package_over_a_folder_that_is_not_one(workspace: Path, argv: list[str]) -> None:
    (workspace / "student-nokd").mkdir()
    (workspace / "student-nokd" / "results.csv").write_text("a,b\n")
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    args = [a.format(ws=workspace) for a in argv]
    if args[0] == "distill":
        args += ["--teacher", str(workspace / "teacher"), "--student", "layers:0,1"]  # the tiny teacher's 2 layers
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert "not a package" in str(exc.value)
    assert "choose a new or empty folder" in str(exc.value)
    assert intact(workspace)
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before  # refused before any work
    assert (workspace / "student-nokd" / "results.csv").is_file()


def test_absent_empty_and_package_folders_may_be_written(workspace: Path, tmp_path: Path) -> None:
    check_output_dir(tmp_path / "new")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty")
    check_output_dir(workspace / "teacher")  # a package: rebuilding it replaces it
    with pytest.raises(OutputDirError, match=r"folders \(teacher\)"):
        check_output_dir(workspace)
    (tmp_path / "loose").mkdir()
    (tmp_path / "loose" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(OutputDirError, match=r"files and no manifest\.json"):
        check_output_dir(tmp_path / "loose")
    with pytest.raises(OutputDirError, match="is a file"):
        check_output_dir(workspace / "notes.txt")


@pytest.mark.parametrize(
    "argv",
    [
        ["ship", "--package", "{ws}/teacher", "--output-dir", "{ws}/teacher"],
        ["ship", "--package", "{ws}/teacher", "--output-dir", "{ws}/teacher/slim"],
        ["distill", "--teacher", "{ws}/teacher", "--student", "layers:0,1", "--output-dir", "{ws}/teacher"],
        ["distill", "--teacher", "{ws}/teacher", "--student", "layers:0,1", "--output-dir", "{ws}/teacher/student"],
        ["prune", "--model", "{ws}/teacher", "--distill-from", "{ws}/teacher", "--output-dir", "{ws}/teacher"],
    ],
    ids=[
        "ship-onto-itself",
        "ship-inside-itself",
        "distill-onto-teacher",
        "distill-inside-teacher",
        "prune-onto-teacher",
    ],
)
def test_no_command_writes_over_the_package_it_must_keep(workspace: Path, argv: list[str]) -> None:
    before = {p.relative_to(workspace): p.stat().st_mtime_ns for p in workspace.rglob("*")}
    with pytest.raises(SystemExit) as exc:
        main([a.format(ws=workspace) for a in argv])
    assert f"overlaps {workspace / 'teacher'}, which this command reads and must keep" in str(exc.value)
    assert {p.relative_to(workspace): p.stat().st_mtime_ns for p in workspace.rglob("*")} == before


def test_a_package_may_be_rebuilt_in_place_from_itself(workspace: Path) -> None:
    check_output_dir(workspace / "teacher")  # nothing to keep: prune --model X --output-dir X replaces X
    check_output_dir(workspace / "teacher2", workspace / "teacher", None)  # a sibling folder is fine
    with pytest.raises(OutputDirError, match="overlaps"):
        check_output_dir(workspace / "teacher" / "new", workspace / "teacher")  # a new folder inside it


def test_a_full_build_refuses_a_teacher_folder_where_its_student_goes(tmp_path: Path) -> None:
    """The full preset writes its student beside the teacher, to student/ and student-nokd/."""
    for name in ("student", "student-nokd"):
        with pytest.raises(SystemExit, match="where the full preset writes its student"):
            main(["build", "--preset", "full", "--output-dir", str(tmp_path / name), "--max-train-samples", "8"])
        assert not (tmp_path / name).exists()


def test_a_folder_is_replaced_only_when_it_is_all_package(workspace: Path, tmp_path: Path) -> None:
    """A manifest.json that is not a package's, or files the manifest does not list, would be lost with it."""
    other = tmp_path / "extension"
    other.mkdir()
    (other / "manifest.json").write_text('{"name": "my web extension"}')
    (other / "my_notes.txt").write_text("keep me")
    with pytest.raises(OutputDirError, match=r"a manifest\.json that is not a package's"):
        check_output_dir(other)
    (workspace / "teacher" / "results.csv").write_text("a,b\n")
    with pytest.raises(OutputDirError, match=r"files its manifest does not list \(results\.csv\)"):
        check_output_dir(workspace / "teacher")
    (workspace / "teacher" / "results.csv").unlink()
    (workspace / "teacher" / ".DS_Store").write_bytes(b"")
    check_output_dir(workspace / "teacher")  # hidden files are not package files, and not the user's work either
    with pytest.raises(OutputDirError, match="which is a file"):
        check_output_dir(workspace / "notes.txt" / "package")
    with pytest.raises(SystemExit, match="which is a file"):  # before any training
        main(["finetune", "--output-dir", str(workspace / "notes.txt" / "package"), "--max-train-samples", "8"])
