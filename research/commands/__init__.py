"""The `python -m research` commands: one module each, with HELP, add_arguments(parser) and run(args) -> int."""

from __future__ import annotations

from types import ModuleType

from research.commands import feature_scores, frontier, seeds

COMMANDS: dict[str, ModuleType] = {"frontier": frontier, "feature-scores": feature_scores, "seeds": seeds}
