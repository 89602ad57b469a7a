"""The user documentation stays about the product and stays true: no development-process words or machine
paths, a layout that matches the tree, links that resolve, and a settings table that matches the code."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from pydantic import Field

from app.core.config import Settings
from scripts import settings_table

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = ("README.md", "docs", "reports")

# How the work was done is not what the product is: session numbers, the machines it was done on, scripts
# that are not in the repository, the design brief the docs replace. Seed-named packages (student-s43) use
# seeds from 42 up, so the short form only flags numbers below 40.
PROCESS = [
    (re.compile(r"\bsessions?\s+\d+", re.IGNORECASE), "a session number"),
    (re.compile(r"\bs(?:[0-9]|[1-3][0-9])\b"), "a session number (sN)"),
    (re.compile(r"\b(?:this|the dev|dev)\s+VM\b", re.IGNORECASE), "the build machine"),
    (re.compile(r"\blent\b", re.IGNORECASE), "a lent machine"),
    (re.compile(r"\bborrowed\b", re.IGNORECASE), "a borrowed machine"),
    (re.compile(r"\bdevice time\b", re.IGNORECASE), "device time"),
    (re.compile(r"\bwarm machine\b", re.IGNORECASE), "a warm machine"),
    (re.compile(r"\bruns/s\d"), "a script outside the repository"),
    (re.compile(r"DESIGN\.md"), "the design brief"),
    (re.compile(r"(?<![\w.])/(?:work|root|home)/"), "an absolute path of a machine"),
]
# Reports are written by tools: a temporary folder of the run that made them says nothing to a reader.
REPORT_ONLY = [(re.compile(r"(?<![\w.])/tmp/"), "a temporary path of the run")]


def documents() -> list[Path]:
    """The tracked text files of README.md, docs/ and reports/ (every file there when git is not available)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", *DOCUMENTS], cwd=ROOT, capture_output=True, check=True, timeout=30
        ).stdout
        paths = [ROOT / p for p in listed.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):
        paths = [ROOT / "README.md", *(p for d in DOCUMENTS[1:] for p in (ROOT / d).rglob("*") if p.is_file())]
    return [p for p in paths if p.is_file() and b"\0" not in p.read_bytes()[:8192]]


def problems(text: str, report: bool = False) -> list[str]:
    """Every forbidden word or path in `text`, as 'line N: what (match)'."""
    rules = PROCESS + (REPORT_ONLY if report else [])
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, what in rules:
            found += [f"line {number}: {what} ({m.group(0)!r})" for m in pattern.finditer(line)]
    return found


def test_the_scan_catches_process_words_and_machine_paths() -> None:
    bad = (
        "Measured in session 12 on this VM (runs/s12/x.py, see DESIGN.md).\n"
        "Figures from s9, with the device time a lent GPU gave; data in /work/shared/data and /root/x.\n"
        "The report of /tmp/pytest-1/x.\n"
    )
    found = problems(bad, report=True)
    for what in ("session number", "sN", "build machine", "outside the repository", "design brief", "device time"):
        assert any(what in f for f in found), (what, found)
    assert sum("absolute path" in f for f in found) == 2
    assert any("temporary path" in f for f in found)
    assert not problems("/tmp/x", report=False)  # docs may name a container's /tmp (Ray's logs)


def test_the_scan_lets_product_text_through() -> None:
    fine = (
        "Seeds 42-46 (student-s43, st-e6-s42-kd) on an H200; 2 workers; the Ray cluster's VMs; p50 1.51 ms.\n"
        "A relative path: artifacts/student, reports/soak-2workers.json; a URL: http://127.0.0.1:8000/docs.\n"
    )
    assert problems(fine, report=True) == []


def test_documents_speak_of_the_product_only() -> None:
    files = documents()
    assert any(p.name == "README.md" for p in files)
    assert any(p.parent.name == "docs" for p in files)
    found = [
        f"{p.relative_to(ROOT)} {hit}"
        for p in files
        for hit in problems(p.read_text(errors="replace"), report=p.parent.name == "reports")
    ]
    assert not found, "\n".join(found)


def readme_layout() -> list[str]:
    """The first word of each line of the README's layout block."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout", 1)[1]
    block = section.split("```", 2)[1]
    return [line.split()[0] for line in block.splitlines() if line.strip()]


def test_readme_layout_matches_the_tree() -> None:
    entries = readme_layout()
    assert len(entries) >= 8
    missing = [e for e in entries if not (ROOT / e).exists()]
    assert not missing, f"README layout names what does not exist: {missing}"
    top = {p.name for p in ROOT.iterdir() if p.is_dir() and not p.name.startswith(".")}
    listed = {e.rstrip("/").split("/")[0] for e in entries}
    # Every tracked top-level folder is explained (build outputs and caches are not tracked).
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    tracked_top = {line.split("/")[0] for line in tracked.splitlines() if "/" in line} & top
    assert tracked_top <= listed, f"top-level folders missing from the README layout: {tracked_top - listed}"


LINK = re.compile(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)")
DOCS = [ROOT / "README.md", ROOT / "loadtests" / "README.md", *(ROOT / "docs").glob("*.md")]


def anchors(doc: Path) -> set[str]:
    """The heading anchors GitHub makes for a Markdown file (lowercase, punctuation dropped, spaces to -)."""
    seen: dict[str, int] = {}
    out = set()
    in_code = False
    for line in doc.read_text().splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not re.match(r"#{1,6} ", line):
            continue
        slug = re.sub(r"[^\w\- ]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        out.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return out


def test_relative_links_and_their_anchors_resolve() -> None:
    broken = []
    for doc in DOCS:
        for target, anchor in LINK.findall(doc.read_text()):
            if re.match(r"[a-z]+:", target):
                continue  # http(s), mailto: not checked here
            path = doc.parent / target if target else doc
            if not path.exists():
                broken.append(f"{doc.relative_to(ROOT)} -> {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{doc.relative_to(ROOT)} -> {target}#{anchor}")
    assert not broken, broken


def test_readme_marks_the_results_table() -> None:
    text = (ROOT / "README.md").read_text()
    table = text.split("<!-- results-table -->", 1)[1].split("<!-- /results-table -->", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert len(rows) >= 3  # header, rule, at least one model


def test_settings_table_matches_the_code() -> None:
    current = settings_table.DOC.read_text()
    assert settings_table.replace_table(current, settings_table.render()) == current, (
        "docs/configuration.md is stale: run python -m scripts.settings_table"
    )
    for name in Settings.model_fields:
        assert f"`INTENT_{name.upper()}`" in current


def test_settings_table_goes_stale_when_the_code_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    class Changed(Settings):
        max_batch_size: int = Field(default=48, ge=1)

    monkeypatch.setattr(settings_table, "Settings", Changed)
    current = settings_table.DOC.read_text()
    assert settings_table.replace_table(current, settings_table.render()) != current
    assert settings_table.main(["--check"]) == 1


def test_an_undocumented_setting_fails_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    class Extended(Settings):
        new_knob: int = 1

    monkeypatch.setattr(settings_table, "Settings", Extended)
    with pytest.raises(ValueError, match="new_knob"):
        settings_table.render()
