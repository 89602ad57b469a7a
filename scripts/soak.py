"""Soak test (a script, not CI): a long run at ~70% of measured capacity; zero errors, stable p99, flat memory.

Starts `python -m app` on 127.0.0.1 (a free port), measures capacity with a short closed loop
(`--concurrency` clients, each sending its next request when the last answer arrives), then sends
requests open loop at `--load` x that rate for `--duration` seconds: arrivals do not wait for
answers, so a server that slows down builds a queue instead of hiding it. Per `--window`: requests,
errors (anything but 200, or a transport error), p50/p99 latency; resident memory (VmRSS of the
server process and its workers) every `--rss-every` seconds. Memory growth is measured from the end of `--warmup`.
At most `--max-in-flight` requests are outstanding: an arrival due while that many wait is skipped and counted,
never queued in the client, whose connection pool slows down with its queue until the load generator, not the
server, is what the run measures (seen: the client at 100% of a core, the server idle, the run never ending).

    python scripts/soak.py --package artifacts/student --backend onnx-int8            # 10 minutes
    python scripts/soak.py --package /tmp/pkg --backend fake --duration 20 --warmup 5 --window 5

Pass criteria (exit 0): zero errors; no skipped arrivals; every window's p99 within `--p99-ratio` x the median
window p99; RSS growth after warm-up under `--max-rss-growth` (5%). Figures go to stdout and --out (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

logger = logging.getLogger("soak")
ROOT = Path(__file__).resolve().parents[1]
TEXTS = [
    "transfer $100 from checking to savings",
    "what is my account balance",
    "set a timer for ten minutes",
    "will it rain tomorrow",
    "how do you say thank you in spanish",
    "what is the dow doing today",
    "book a table for two at an italian place",
    "play some jazz",
    "how much money do i have left",
    "remind me to call mom",
]


@dataclass
class Window:
    """Answers that arrived during one reporting window."""

    start: float
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles in ms."""
        lat = sorted(self.latencies)

        def pct(q: float) -> float | None:
            return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 2) if lat else None

        return {
            "t": round(self.start, 1),
            "ok": len(lat),
            "errors": dict(self.errors),
            "skipped": self.skipped,
            "p50_ms": pct(0.5),
            "p99_ms": pct(0.99),
        }


def free_port() -> int:
    """An unused loopback port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    """Resident memory in MB of a process plus its child processes (the workers of INTENT_WORKERS > 1)."""
    total, found = 0.0, False
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except OSError:
            continue
        if int(status.parent.name) == pid or int(fields.get("PPid", "0").strip()) == pid:
            total += int(fields.get("VmRSS", "0 kB").split()[0]) / 1024
            found = True
    if not found:
        raise RuntimeError(f"no process {pid}")
    return total


def start_server(args: argparse.Namespace, port: int, log: Path) -> subprocess.Popen:
    """`python -m app` with the package and backend under test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENT_")}
    env |= {
        "INTENT_WORKERS": str(args.workers),
        "INTENT_MODEL_DIR": str(args.package),
        "INTENT_BACKEND": args.backend,
        "INTENT_HOST": "127.0.0.1",
        "INTENT_PORT": str(port),
        "INTENT_LOG_LEVEL": "warning",
    }
    with log.open("w") as fh:
        return subprocess.Popen([sys.executable, "-m", "app"], cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)


async def wait_ready(client: httpx.AsyncClient, proc: subprocess.Popen, timeout: float) -> None:
    """Poll /readyz until 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if (await client.get("/readyz")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("server not ready in time")


async def capacity(client: httpx.AsyncClient, concurrency: int, seconds: float) -> float:
    """Closed-loop throughput (successful req/s) with `concurrency` clients."""
    done = 0
    stop = time.monotonic() + seconds

    async def worker(i: int) -> None:
        nonlocal done
        n = i
        while time.monotonic() < stop:
            r = await client.post("/classify", json={"text": TEXTS[n % len(TEXTS)]})
            done += r.status_code == 200
            n += 1

    start = time.monotonic()
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    return done / (time.monotonic() - start)


async def soak(client: httpx.AsyncClient, pid: int, rate: float, args: argparse.Namespace) -> dict[str, Any]:
    """Open-loop load at `rate` req/s for args.duration seconds; per-window figures and RSS samples."""
    start = time.monotonic()
    windows: list[Window] = []
    rss: list[tuple[float, float]] = []
    pending: set[asyncio.Task] = set()

    def window_at(t: float) -> Window:
        index = int((t - start) // args.window)
        while len(windows) <= index:
            windows.append(Window(start=len(windows) * args.window))
        return windows[index]

    async def one(text: str) -> None:
        sent = time.monotonic()
        try:
            r = await client.post("/classify", json={"text": text})
            status = str(r.status_code)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        now = time.monotonic()
        w = window_at(now)
        if status == "200":
            w.latencies.append(now - sent)
        else:
            w.errors[status] = w.errors.get(status, 0) + 1

    async def sample_rss() -> None:
        while True:
            rss.append((round(time.monotonic() - start, 1), round(rss_mb(pid), 1)))
            await asyncio.sleep(args.rss_every)

    async def progress() -> None:
        # One line per finished window, so a run that stalls shows it while it runs, not after.
        for index in range(1, int(args.duration // args.window) + 1):
            await asyncio.sleep(start + index * args.window - time.monotonic())
            w = window_at(start + (index - 1) * args.window).summary()
            logger.info(
                "window t=%.0fs ok=%d errors=%s skipped=%d p99=%s ms in flight=%d",
                w["t"],
                w["ok"],
                w["errors"] or 0,
                w["skipped"],
                w["p99_ms"],
                len(pending),
            )

    sampler = asyncio.create_task(sample_rss())
    reporter = asyncio.create_task(progress())
    n = sent = 0
    while (elapsed := time.monotonic() - start) < args.duration:
        due = n / rate  # fixed schedule: falling behind sends the backlog at once, like real arrivals
        if due > elapsed:
            await asyncio.sleep(due - elapsed)
        if len(pending) >= args.max_in_flight:
            window_at(time.monotonic()).skipped += 1
        else:
            task = asyncio.create_task(one(TEXTS[n % len(TEXTS)]))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        n += 1
    await asyncio.gather(*pending)
    sampler.cancel()
    reporter.cancel()
    rss.append((round(time.monotonic() - start, 1), round(rss_mb(pid), 1)))
    return {"due": n, "sent": sent, "windows": [w.summary() for w in windows], "rss_mb": rss}


def verdict(result: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Errors, p99 stability and memory growth after warm-up against the thresholds."""
    windows = [w for w in result["windows"] if w["ok"]]
    errors = sum(sum(w["errors"].values()) for w in result["windows"])
    skipped = sum(w["skipped"] for w in result["windows"])
    p99s = [w["p99_ms"] for w in windows if w["t"] >= args.warmup] or [w["p99_ms"] for w in windows]
    median_p99 = statistics.median(p99s) if p99s else None
    after = [mb for t, mb in result["rss_mb"] if t >= args.warmup] or [mb for _, mb in result["rss_mb"]]
    growth = (after[-1] - after[0]) / after[0] if after else None
    checks = {
        "zero_errors": errors == 0,
        "no_skipped_arrivals": skipped == 0,
        "p99_stable": bool(p99s) and max(p99s) <= args.p99_ratio * median_p99,
        "rss_growth_ok": growth is not None and growth < args.max_rss_growth,
    }
    return {
        "errors": errors,
        "skipped": skipped,
        "p99_ms_median": median_p99,
        "p99_ms_max": max(p99s) if p99s else None,
        "rss_mb_after_warmup": after[0] if after else None,
        "rss_mb_end": after[-1] if after else None,
        "rss_growth": round(growth, 4) if growth is not None else None,
        "checks": checks,
        "passed": all(checks.values()),
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the server, measure capacity, soak, stop the server with SIGTERM."""
    port = free_port()
    log = args.out.with_suffix(".server.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    proc = start_server(args, port, log)
    # One connection per outstanding request: arrivals never wait in the pool's queue.
    pool = max(args.concurrency, args.max_in_flight)
    limits = httpx.Limits(max_connections=pool, max_keepalive_connections=pool)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30, limits=limits) as client:
            await wait_ready(client, proc, args.ready_timeout)
            await capacity(client, args.concurrency, 2.0)  # warm-up
            measured = await capacity(client, args.concurrency, args.capacity_seconds)
            rate = args.load * measured
            logger.info("capacity %.1f req/s; soaking at %.1f req/s for %.0f s", measured, rate, args.duration)
            result = await soak(client, proc.pid, rate, args)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            exit_code = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            exit_code = proc.wait()
    return {
        "package": str(args.package),
        "backend": args.backend,
        "capacity_rps": round(measured, 1),
        "rate_rps": round(rate, 1),
        "duration_s": args.duration,
        "server_exit_code": exit_code,
        **result,
        "verdict": verdict(result, args),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", type=Path, default=Path("artifacts/student"))
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--workers", type=int, default=1, help="INTENT_WORKERS (memory is summed over the workers)")
    p.add_argument("--duration", type=float, default=600.0, help="soak seconds")
    p.add_argument("--load", type=float, default=0.7, help="share of measured capacity")
    p.add_argument("--concurrency", type=int, default=16, help="clients for the capacity run")
    p.add_argument("--max-in-flight", type=int, default=128, help="outstanding requests; later arrivals are skipped")
    p.add_argument("--capacity-seconds", type=float, default=20.0)
    p.add_argument("--warmup", type=float, default=60.0, help="seconds excluded from memory growth and p99")
    p.add_argument("--window", type=float, default=60.0, help="reporting window, seconds")
    p.add_argument("--rss-every", type=float, default=5.0)
    p.add_argument("--p99-ratio", type=float, default=2.0)
    p.add_argument("--max-rss-growth", type=float, default=0.05)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--out", type=Path, default=Path("reports/soak.json"))
    args = p.parse_args(argv)
    if args.max_in_flight < 1 or args.concurrency < 1:
        p.error("--max-in-flight and --concurrency must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the soak and print its figures; exit 1 if a check fails."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    args = parse_args(argv)
    report = asyncio.run(run(args))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for w in report["windows"]:
        logger.info(
            "t=%6.0fs ok=%6d errors=%s skipped=%d p50=%s ms p99=%s ms",
            w["t"],
            w["ok"],
            w["errors"] or 0,
            w["skipped"],
            w["p50_ms"],
            w["p99_ms"],
        )
    logger.info("verdict: %s", json.dumps(report["verdict"]))
    return 0 if report["verdict"]["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
