"""What the research commands share: printing a Markdown table and writing it to --output."""

from __future__ import annotations

from pathlib import Path


def print_table(table: str, output: Path | None) -> int:
    """Print the table, write it to `output` when given (making its folder), and return the exit code 0."""
    print(table)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(table + "\n")
        print(f"wrote {output}")
    return 0
