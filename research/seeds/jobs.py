"""Run commands as child processes, a bounded number at a time, each logging to its own file."""

from __future__ import annotations

import logging
import shlex
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


def run_parallel(
    commands: list[list[str]],
    logs: Path,
    max_parallel: int,
    cwd: Path | None = None,
    names: list[str] | None = None,
    on_done: Callable[[int, int, float], None] | None = None,
) -> list[tuple[int, float]]:
    """Run the commands, at most max_parallel at a time, each logging to logs/NAME.log; (exit code, seconds) each.

    on_done(index, exit code, seconds) is called as each job ends, so results are kept even if the caller is
    killed later (e.g. by a time limit on the machine that runs them).

    A bound matters on one GPU as much as on a CPU: small HF Trainer jobs are bound by Python overhead, and on one
    GPU 11 at once ran 53 ms per step each against 21 ms for 4 (docs/experiments.md), so more brings nothing.
    """
    if max_parallel < 1:
        raise ValueError("max_parallel must be >= 1")
    logs.mkdir(parents=True, exist_ok=True)
    names = names or [f"job-{i:02d}" for i in range(len(commands))]
    if len(names) != len(commands):
        raise ValueError("one name per command")
    results: list[tuple[int, float] | None] = [None] * len(commands)
    running: dict[int, tuple[subprocess.Popen, Any, float]] = {}
    pending = list(range(len(commands)))
    while pending or running:
        while pending and len(running) < max_parallel:
            i = pending.pop(0)
            log = (logs / f"{names[i]}.log").open("w")
            logger.info("start %d/%d: %s", i + 1, len(commands), shlex.join(commands[i]))
            proc = subprocess.Popen(commands[i], cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
            running[i] = (proc, log, time.monotonic())
        time.sleep(0.2)
        for i, (proc, log, started) in list(running.items()):
            if proc.poll() is None:
                continue
            log.close()
            del running[i]
            results[i] = (proc.returncode, time.monotonic() - started)
            tail = " / ".join((logs / f"{names[i]}.log").read_text(errors="replace").splitlines()[-2:])
            level = logging.INFO if proc.returncode == 0 else logging.ERROR
            logger.log(level, "done %d/%d (exit %d): %s", i + 1, len(commands), proc.returncode, tail)
            if on_done is not None:
                on_done(i, proc.returncode, results[i][1])
    return [r for r in results if r is not None]
