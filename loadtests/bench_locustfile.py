"""Closed-loop Locust user for scripts/bench_serving.py when `wrk` is not installed.

Each user holds one connection and POSTs the next body as soon as the previous answer arrives
(wait 0), so `-u N` users approximate `wrk -c N`. Bodies come from the file in BENCH_BODIES (one
JSON body per line), path from BENCH_PATH (default /classify). Only the status code is checked:
the benchmark compares servers, the answers are checked by loadtests/locustfile.py.
Run with `--processes -1` so the load generator is not limited to one core.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

from locust import FastHttpUser, constant, task

BODIES = [line for line in Path(os.environ["BENCH_BODIES"]).read_text(encoding="utf-8").splitlines() if line]
PATH = os.environ.get("BENCH_PATH", "/classify")
HEADERS = {"Content-Type": "application/json"}


class BenchUser(FastHttpUser):
    wait_time = constant(0)

    def on_start(self) -> None:
        self.i = random.randrange(len(BODIES))

    @task
    def post(self) -> None:
        self.i = (self.i + 1) % len(BODIES)
        with self.client.post(PATH, data=BODIES[self.i], headers=HEADERS, name=PATH, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
