"""The `python -m compression` commands: one module each, with HELP, add_arguments(parser) and run(args) -> int."""

from __future__ import annotations

from types import ModuleType

from compression.commands import (
    benchmark,
    build,
    calibrate,
    distill,
    evaluate,
    export,
    finetune,
    finish,
    prune,
    quantize,
    ship,
)

# The one table of commands, in the order `--help` lists them.
COMMANDS: dict[str, ModuleType] = {
    "finetune": finetune,
    "export": export,
    "quantize": quantize,
    "calibrate": calibrate,
    "evaluate": evaluate,
    "distill": distill,
    "prune": prune,
    "finish": finish,
    "benchmark": benchmark,
    "ship": ship,
    "build": build,
}
