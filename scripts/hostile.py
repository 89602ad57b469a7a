"""Hostile clients (a script, not CI): what bad clients cost the good ones, each figure against its target.

Starts `python -m app` on 127.0.0.1 (a free port, one server per check) and runs ordinary clients (closed loop,
real queries, raw HTTP/1.1 keep-alive connections) while a hostile client, in its own process, does its worst:

    isolation       a client sends {"text": "\\ud800"} (valid JSON, not valid Unicode) every 20 ms
    flood-headers   one connection sends an endless header section, reconnecting whenever it is closed
    flood-pipeline  one connection pipelines GET /healthz as fast as it can, reconnecting likewise
                    (--flooder polite: each flood stops at the server's answer and reconnects at once)
    idle            --idle-connections connections that send nothing, half a head, or a head and half a body
    goodput         wrk at 64, then 1,000 connections; a probe times every 429/503 under the 1,000
    lifecycle       INTENT_WORKERS=2: kill -9 of one worker, then of the parent

    python scripts/hostile.py                                                  # the full run, ~10 minutes
    python scripts/hostile.py --backend fake --package PKG --duration 3 --idle-connections 300 --idle-timeout 2

Figures and a PASS/FAIL line per target go to stdout, --out (JSON) and its .md sibling; exit 1 if a target fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import resource
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.core.config import Settings  # noqa: E402
from app.guard import LINGER_S  # noqa: E402
from scripts.bench_serving import Config, run_wrk, running_server  # noqa: E402
from scripts.soak import TEXTS, free_port, rss_mb  # noqa: E402

logger = logging.getLogger("hostile")
CHECKS = ["isolation", "flood-headers", "flood-pipeline", "idle", "goodput", "lifecycle"]
BAD_BODY = b'{"text": "\\ud800"}'
VERDICT = {True: "PASS", False: "FAIL", None: "–"}


def pct(values: list[float], q: float) -> float | None:
    """The q-quantile of seconds, in ms."""
    s = sorted(values)
    return round(1000 * s[min(len(s) - 1, int(q * len(s)))], 2) if s else None


def post(body: bytes, path: str = "/classify") -> bytes:
    """A keep-alive HTTP/1.1 POST."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


@dataclass
class Load:
    """Every answer (status, seconds to its head) and every transport failure of a set of clients."""

    answers: list[tuple[int, float]] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        """Counts and latency percentiles of the 200 answers; anything else is a failure."""
        ok = [t for s, t in self.answers if s == 200]
        failures = Counter({str(s): n for s, n in Counter(s for s, _ in self.answers if s != 200).items()})
        failures.update(self.errors)
        summary = {"ok": len(ok), "failed": sum(failures.values()), "failures": dict(failures)}
        return summary | {"p50_ms": pct(ok, 0.5), "p99_ms": pct(ok, 0.99)}


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> tuple[int, float, bool]:
    """Send one request, read its answer: status, seconds to the end of its head, whether the connection stays."""
    sent = time.perf_counter()
    writer.write(data)
    head = await reader.readuntil(b"\r\n\r\n")
    took = time.perf_counter() - sent
    lines = head.decode("latin-1").lower().split("\r\n")
    headers = dict(line.split(":", 1) for line in lines[1:] if ":" in line)
    await reader.readexactly(int(headers.get("content-length", "0")))
    return int(lines[0].split()[1]), took, headers.get("connection", "").strip() != "close"


async def clients(port: int, n: int, stop: asyncio.Event, load: Load, body: bytes | None = None) -> None:
    """n closed-loop clients until `stop`: each sends its next request when the last answer arrives."""

    async def one(i: int) -> None:
        conn = None
        while not stop.is_set():
            data = post(body or json.dumps({"text": TEXTS[i % len(TEXTS)]}).encode())
            i += 1
            try:
                conn = conn or await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 10)
                status, took, keep = await asyncio.wait_for(exchange(*conn, data), 10)
                load.answers.append((status, took))
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                load.errors[type(exc).__name__] += 1
                keep = False
            except TimeoutError:
                load.errors["timeout"] += 1
                keep = False
            if not keep and conn:
                conn[1].close()
                conn = None
            if body is not None:
                await asyncio.sleep(0.02)  # the bad client's pace
        if conn:
            conn[1].close()

    await asyncio.gather(*(one(i) for i in range(n)))


async def while_loaded(port: int, n: int, work: Any, load: Load | None = None) -> tuple[Load, Any]:
    """Ordinary clients running for as long as `work` (an awaitable) runs; their Load and work's result."""
    load, stop = load or Load(), asyncio.Event()
    task = asyncio.create_task(clients(port, n, stop, load))
    await asyncio.sleep(0.2)
    try:
        result = await work
    finally:
        stop.set()
        await task
    return load, result


# ----------------------------------------------------------------- hostile clients (each in its own process)


async def surrogates(port: int, seconds: float) -> dict[str, int]:
    """One client sending a lone surrogate every 20 ms; its answers' statuses."""
    load, stop = Load(), asyncio.Event()
    asyncio.get_running_loop().call_later(seconds, stop.set)
    await clients(port, 1, stop, load, BAD_BODY)
    return {str(s): n for s, n in Counter(s for s, _ in load.answers).items()} | dict(load.errors)


async def flood(port: int, seconds: float, start: bytes, chunk: bytes, polite: bool = False) -> dict[str, Any]:
    """Send `start`, then `chunk` forever, reading what comes back; reconnect when the server closes.

    A persistent flooder writes without pause, so it notices the server's answer and FIN only when a write
    fails or blocks; a polite one lets its reader run after every write, so it closes and reconnects as soon
    as the server has answered and sent FIN.
    """
    end, sent, connections, answers = time.monotonic() + seconds, 0, 0, 0
    ends, statuses = Counter(), Counter()  # how each connection ended (writing), the first status it got (reading)
    while time.monotonic() < end:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            ends[type(exc).__name__] += 1
            await asyncio.sleep(0.01)
            continue
        connections += 1

        async def read(reader: asyncio.StreamReader = reader) -> None:
            nonlocal answers
            tail, first = b"", "no answer"
            try:
                while data := await reader.read(65536):
                    first = data.split(b" ", 2)[1].decode() if first == "no answer" else first
                    answers += (tail + data).count(b"HTTP/1.1 ")
                    tail = data[-8:]
            except OSError:  # reset: the server closed with our unread requests in its buffer
                pass
            finally:
                statuses[first] += 1

        reading = asyncio.create_task(read())
        try:
            writer.write(start)
            while not reading.done() and time.monotonic() < end:
                writer.write(chunk)
                sent += len(chunk)
                await writer.drain()
                if polite:
                    await asyncio.sleep(0)  # the reader sees the answer and the FIN now, not when a write blocks
            ends["closed by the server" if reading.done() else "ran out"] += 1
        except OSError as exc:
            ends[type(exc).__name__] += 1
        finally:
            await asyncio.wait([reading], timeout=1)
            reading.cancel()
            writer.close()
    mib = round(sent / 2**20, 1)
    return {"connections": connections, "mib_sent": mib, "responses_read": answers} | {
        "first_status": dict(statuses),
        "ends": dict(ends),
        "placed": placed(),
    }


async def idle(port: int, count: int, timeout: float, slack: float) -> dict[str, Any]:
    """`count` connections held open, a third each sending nothing, half a head, a head and half a body."""
    kinds = {
        "nothing": b"",
        "half_head": b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Type: app",
        "half_body": post(b'{"text": "what is my balance"}')[:-12],
    }
    names, gate = list(kinds), asyncio.Semaphore(512)  # connects in flight: a burst beyond the backlog only waits
    results: dict[str, Counter] = {k: Counter() for k in kinds}
    closed_after: list[float] = []
    started = time.monotonic()

    async def one(i: int) -> None:
        kind = names[i % len(names)]
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError as exc:
                results[kind][type(exc).__name__] += 1
                return
        writer.write(kinds[kind])
        t0 = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(), timeout * 2 + slack + 30)
            took = time.monotonic() - t0
            closed_after.append(took)
            status = data.split(b" ", 2)[1].decode() if data else "no answer"
            results[kind][f"{status}, {'in time' if took <= timeout + slack else 'late'}"] += 1
        except TimeoutError:
            results[kind]["still open"] += 1
        except OSError as exc:
            results[kind][type(exc).__name__] += 1
        finally:
            writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(count)]
    await asyncio.gather(*tasks)
    in_time = sum(n for c in results.values() for k, n in c.items() if k.endswith("in time"))
    return {
        "connections": count,
        "closed_in_time": in_time,
        "seconds_to_close_min": round(min(closed_after), 2) if closed_after else None,
        "seconds_to_close_max": round(max(closed_after), 2) if closed_after else None,
        "wall_s": round(time.monotonic() - started, 1),
        "by_kind": {k: dict(c) for k, c in results.items()},
    }


async def sink(port: int, seconds: float, max_head_bytes: int, max_pipelined: int) -> dict[str, Any]:
    """A stand-in server for the flood control: canned answers, closing where and as the service's guard would.

    It answers every request head with a fixed 200; past `max_pipelined` requests in one read it answers the
    first alone, and past `max_head_bytes` of one head it answers a fixed 431; then it stops reading, sends FIN
    and closes LINGER_S later (the guard's staged close). The attacker does the same work as against the
    service, while the stand-in's own work is close to nothing.
    """
    ok = b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 15\r\n\r\n{"status":"ok"}'
    too_large = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    served = Counter()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = 0  # bytes of the head in progress
        try:
            while data := await reader.read(65536):
                heads = data.count(b"\r\n\r\n")
                head = len(data) - data.rfind(b"\r\n\r\n") - 4 if heads else head + len(data)
                if heads > max_pipelined + 1:  # one in progress, max_pipelined queued behind it, one too many
                    writer.write(ok)
                    served["closed (pipelined)"] += 1
                    break
                writer.write(ok * heads)
                if head > max_head_bytes:
                    writer.write(too_large)
                    served["closed (head too large)"] += 1
                    break
            else:
                return
            writer.write_eof()
            await asyncio.sleep(LINGER_S)
        except OSError:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    async with server:
        await asyncio.sleep(seconds)
    return {"served": dict(served), "placed": placed()}


def hostile(name: str, *args: Any) -> dict[str, Any]:
    """Entry point of a hostile client's (or the stand-in server's) process."""
    coro = {"surrogates": surrogates, "flood": flood, "idle": idle, "sink": sink}[name]
    return asyncio.run(coro(*args))


def place(cpus: list[int] | None, background: bool) -> None:
    """Pin this process to `cpus`; `background`: the idle scheduling class, CPU time nobody else wants."""
    if cpus:
        os.sched_setaffinity(0, cpus)
    if background:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def placed(pid: int = 0) -> dict[str, Any]:
    """Where a process runs, as the kernel reports it: its CPUs and scheduling class."""
    names = {os.SCHED_OTHER: "normal", os.SCHED_IDLE: "idle", os.SCHED_BATCH: "batch"}
    return {"cpus": sorted(os.sched_getaffinity(pid)), "class": names.get(os.sched_getscheduler(pid), "other")}


async def in_process(name: str, *args: Any, cpus: list[int] | None = None, background: bool = False) -> dict[str, Any]:
    """Run a hostile client in a fresh process: it does not share the ordinary clients' event loop or GIL."""
    ctx = get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=ctx, initializer=place, initargs=(cpus, background)) as pool:
        return await asyncio.get_running_loop().run_in_executor(pool, hostile, name, *args)


# ---------------------------------------------------------------------------------------------- checks


@contextlib.contextmanager
def server(args: argparse.Namespace, name: str, **env: str) -> Iterator[tuple[Any, int]]:
    """The service under test, ready, on a free port; stopped (whole process group) on exit."""
    port = free_port()
    settings = {"INTENT_MODEL_DIR": str(args.package), "INTENT_BACKEND": args.backend, "INTENT_LOG_LEVEL": "warning"}
    argv = [sys.executable, "-m", "app"]
    if args.server_cpus:  # taskset execs the server: the pid stays, and every thread it starts inherits the CPUs
        argv = ["taskset", "-c", ",".join(map(str, args.server_cpus)), *argv]
        settings["INTENT_NUM_THREADS"] = str(len(args.server_cpus))
    cfg = Config(name, argv, settings | env)
    with running_server(cfg, port, args.out.parent / "hostile_logs" / f"{name}.log", args.ready_timeout) as proc:
        logger.info("%s: server ready on port %d (%s)", name, port, placed(proc.pid))
        yield proc, port


def row(check: str, target: str, value: Any, limit: str, passed: bool | None) -> dict[str, Any]:
    """One line of the final table (passed None: a figure for information, not a target)."""
    return {
        "check": check,
        "target": target,
        "value": value,
        "limit": limit,
        "pass": None if passed is None else bool(passed),
    }


async def baseline(port: int, args: argparse.Namespace) -> dict[str, Any]:
    """The ordinary clients alone, for --baseline seconds."""
    return (await while_loaded(port, args.clients, asyncio.sleep(args.baseline)))[0].summary()


def ratio_of(load: dict[str, Any], base: dict[str, Any]) -> float | None:
    """Ordinary clients' p99 under load over their baseline p99."""
    return round(load["p99_ms"] / base["p99_ms"], 2) if load["p99_ms"] and base["p99_ms"] else None


def p99_ratio(base: dict[str, Any], load: dict[str, Any]) -> str:
    """The ratio with both p99s, as the table shows it."""
    return f"{ratio_of(load, base)} ({load['p99_ms']} / {base['p99_ms']} ms)"


def p99_rows(check: str, base: dict[str, Any], load: dict[str, Any], p99_target: bool = True) -> list[dict[str, Any]]:
    """Ordinary clients: no failure, and p99 within 2x the baseline's (or the ratio for information)."""
    ratio = ratio_of(load, base)
    limit, verdict = ("<= 2", ratio is not None and ratio <= 2) if p99_target else ("info", None)
    return [
        row(check, "ordinary requests failed", load["failed"], "0", load["failed"] == 0 and load["ok"] > 0),
        row(check, "ordinary p99 / baseline p99", p99_ratio(base, load), limit, verdict),
    ]


async def check_isolation(args: argparse.Namespace) -> tuple[dict, list]:
    with server(args, "isolation") as (_, port):
        load, bad = await while_loaded(port, args.clients, in_process("surrogates", port, args.duration))
    ordinary = load.summary()
    bad_4xx, failed = sum(n for s, n in bad.items() if s.isdigit() and 400 <= int(s) < 500), ordinary["failed"]
    return {"ordinary": ordinary, "bad_statuses": bad}, [
        row("isolation", "ordinary requests failed", failed, "0", failed == 0 and ordinary["ok"]),
        row(
            "isolation",
            "bad requests answered 4xx",
            f"{bad_4xx}/{sum(bad.values())}",
            "all",
            bad_4xx == sum(bad.values()) > 0,
        ),
    ]


async def check_flood(args: argparse.Namespace, kind: str) -> tuple[dict, list]:
    if kind == "flood-headers":
        start, chunk = b"GET /healthz HTTP/1.1\r\nHost: x\r\n", b"X-a: " + b"a" * 1000 + b"\r\n"
    else:
        start, chunk = b"", b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    attacker = {"background": bool(args.server_cpus)}  # beside the ordinary clients, on the CPUs they leave
    polite = args.flooder == "polite"
    with server(args, kind) as (proc, port):
        server_placed = placed(proc.pid)
        base = await baseline(port, args)
        rss = [rss_mb(proc.pid)]

        async def sample() -> None:
            while True:
                await asyncio.sleep(1)
                rss.append(rss_mb(proc.pid))

        sampler = asyncio.create_task(sample())
        load, attack = await while_loaded(
            port, args.clients, in_process("flood", port, args.duration, start, chunk * 16, polite, **attacker)
        )
        sampler.cancel()
        # The control: the same attacker floods a stand-in server instead. On a machine where the attacker, the
        # ordinary clients and the service share the cores, this is what the attacker's own CPU costs them.
        control = None
        if args.control:
            limits, decoy = Settings(), free_port()
            stand_in = (decoy, args.duration + 5, limits.max_header_bytes, limits.max_pipelined)
            work = asyncio.gather(
                in_process("sink", *stand_in, cpus=args.server_cpus),  # where the service runs
                in_process("flood", decoy, args.duration, start, chunk * 16, polite, **attacker),
            )
            control_load, (sink_run, control_attack) = await while_loaded(port, args.clients, work)
            control = {
                "ordinary": control_load.summary(),
                "attack": control_attack,
                "stand_in": sink_run["served"],
                "stand_in_placed": sink_run["placed"],
            }
    growth = round(max(rss) - rss[0], 1)
    figures = {"baseline": base, "ordinary": load.summary(), "attack": attack | {"flooder": args.flooder}}
    figures["rss_mib"] = [round(x, 1) for x in rss]
    figures["placed"] = {"server": server_placed, "clients": placed(), "attacker": attack["placed"]}
    rows = [row(kind, "server RSS growth (MiB)", growth, "<= 100", growth <= 100)]
    rows += p99_rows(kind, base, figures["ordinary"])
    if control is not None:
        figures["control"] = control
        ratio = p99_ratio(base, control["ordinary"])
        rows.append(
            row(kind, "ordinary p99 / baseline p99, the attack aimed at a stand-in server", ratio, "info", None)
        )
    return figures, rows


async def check_idle(args: argparse.Namespace) -> tuple[dict, list]:
    timeouts = {"INTENT_HEADER_TIMEOUT_S": str(args.idle_timeout), "INTENT_BODY_TIMEOUT_S": str(args.idle_timeout)}
    with server(args, "idle", **timeouts) as (_, port):
        base = await baseline(port, args)
        hold = in_process(
            "idle", port, args.idle_connections, args.idle_timeout, args.slack, background=bool(args.server_cpus)
        )
        load, held = await while_loaded(port, args.clients, hold)
    held["server_connection_limit"] = Settings(_env_file=None, max_connections=0).connection_limit
    figures = {"baseline": base, "ordinary": load.summary(), "held": held, "timeout_s": args.idle_timeout}
    n, closed = held["connections"], held["closed_in_time"]
    target = f"closed within {args.idle_timeout:g}+{args.slack:g} s"
    # The target here is that ordinary clients keep getting answers; their p99 is shown, not judged.
    rows = [row("idle", target, f"{closed}/{n}", "all", closed == n), *p99_rows("idle", base, load.summary(), False)]
    return figures, rows


async def check_goodput(args: argparse.Namespace) -> tuple[dict, list]:
    wrk = SimpleNamespace(wrk_threads=args.wrk_threads, wrk_status_hook=True, request_timeout=args.request_timeout)
    seconds = max(1, round(args.duration))
    with tempfile.TemporaryDirectory() as tmp, server(args, "goodput") as (_, port):
        bodies = Path(tmp) / "bodies.jsonl"
        bodies.write_text("".join(json.dumps({"text": t}) + "\n" for t in TEXTS))
        url = f"http://127.0.0.1:{port}/classify"
        runs = {}
        for conns in (64, args.connections):
            logger.info("goodput: wrk with %d connections for %d s", conns, seconds)
            wrk_run = asyncio.create_task(asyncio.to_thread(run_wrk, url, bodies, conns, seconds, wrk))
            await asyncio.sleep(min(1.0, seconds / 4))  # the probe starts once wrk's connections are open
            probe, stop = Load(), asyncio.Event()
            asyncio.get_running_loop().call_later(seconds * 0.6, stop.set)
            await clients(port, args.clients, stop, probe)
            runs[conns] = await wrk_run
            runs[conns]["goodput"] = round(runs[conns]["status_counts"].get("200", 0) / runs[conns]["duration_s"], 1)
    refusals = [t for s, t in probe.answers if s in (429, 503)]
    low, high = runs[64], runs[args.connections]
    ratio = round(high["goodput"] / low["goodput"], 3) if low["goodput"] else 0.0
    timeouts = high["error_detail"].get("timeouts", 0)
    worst = pct(refusals, 1.0)
    figures = {"wrk": runs, "probe": probe.summary(), "refusals": len(refusals), "refusal_ms_p99": pct(refusals, 0.99)}
    value, n = f"{ratio} ({high['goodput']} / {low['goodput']} per s)", args.connections
    return figures | {"refusal_ms_max": worst}, [
        row("goodput", f"goodput {n} / 64 connections", value, ">= 0.7", ratio >= 0.7),
        row("goodput", f"client time-outs at {n}", timeouts, "0", timeouts == 0),
        row("goodput", "slowest refusal (ms)", f"{worst} ({len(refusals)} seen)", "< 10", worst is None or worst < 10),
    ]


def children(pid: int) -> list[int]:
    """Live (not zombie) child processes of pid."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(stat.parent.name))
    return found


def alive(pid: int) -> bool:
    """Whether pid runs (a zombie counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def listening(pid: int, port: int) -> bool:
    """Whether pid holds a socket listening on 127.0.0.1:port (a worker that has loaded its model and serves)."""
    rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
    inodes = {f"socket:[{r[9]}]" for r in rows if r[1] == f"0100007F:{port:04X}" and r[3] == "0A"}
    with contextlib.suppress(OSError):
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") in inodes for fd in os.listdir(f"/proc/{pid}/fd"))
    return False


def port_open(port: int) -> bool:
    """Whether something accepts connections on the port."""
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


async def until(condition: Any, limit: float) -> float | None:
    """Seconds until condition() holds (polled every 10 ms), None if not within `limit`."""
    t0 = time.monotonic()
    while not condition():
        if time.monotonic() - t0 > limit:
            return None
        await asyncio.sleep(0.01)
    return round(time.monotonic() - t0, 3)


async def check_lifecycle(args: argparse.Namespace) -> tuple[dict, list]:
    with server(args, "lifecycle", INTENT_WORKERS="2") as (proc, port):
        await until(lambda: sum(listening(p, port) for p in children(proc.pid)) == 2, 60)
        victim, load = children(proc.pid)[0], Load()

        async def replace() -> tuple[float | None, int]:
            await asyncio.sleep(0.5)
            os.kill(victim, signal.SIGKILL)
            before = len(load.answers)
            back = await until(lambda: sum(listening(p, port) for p in children(proc.pid) if p != victim) == 2, 30)
            await asyncio.sleep(1)  # answered by both workers again
            return back, before

        _, (back, before) = await while_loaded(port, args.clients, replace(), load)
        answered_after = sum(s == 200 for s, _ in load.answers[before:])
        workers = children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        gone = await until(lambda: not port_open(port) and not any(alive(p) for p in workers), 30)
        for pid in filter(alive, workers):  # left behind: do not let them outlive the run
            os.kill(pid, signal.SIGKILL)
    ordinary = load.summary()
    figures = {"worker_back_s": back, "ordinary": ordinary, "answered_after_kill": answered_after}
    figures["parent_kill_gone_s"] = gone
    after = f"{answered_after} ({ordinary['failed']})"
    return figures, [
        row("lifecycle", "parent kill -9: nothing left serving (s)", gone, "<= 2", gone is not None and gone <= 2),
        row("lifecycle", "worker kill -9: back to 2 serving (s)", back, "<= 10", back is not None and back <= 10),
        row("lifecycle", "worker kill -9: answered after it (failed)", after, "> 0", answered_after > 0),
    ]


def table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of targets."""
    lines = ["| check | target | measured | limit | result |", "|---|---|---|---|---|"]
    lines += [f"| {r['check']} | {r['target']} | {r['value']} | {r['limit']} | {VERDICT[r['pass']]} |" for r in rows]
    return "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """The selected checks, one server each."""
    figures: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    for name in args.only:
        logger.info("%s: start", name)
        if name.startswith("flood"):
            figures[name], found = await check_flood(args, name)
        else:
            figures[name], found = await globals()[f"check_{name}"](args)
        rows += found
        for r in found:
            logger.info("%s: %s = %s (%s) %s", name, r["target"], r["value"], r["limit"], VERDICT[r["pass"]])
    return {"figures": figures, "targets": rows}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", type=Path, default=Path("models/clinc150-minilm"))
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--only", default=",".join(CHECKS), help=f"comma-separated subset of {CHECKS}")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of each attack (and of each wrk level)")
    p.add_argument("--baseline", type=float, default=5.0, help="seconds of ordinary load alone before an attack")
    p.add_argument("--clients", type=int, default=8, help="ordinary clients (and probe connections for goodput)")
    p.add_argument("--idle-connections", type=int, default=10000)
    p.add_argument("--idle-timeout", type=float, default=5.0, help="INTENT_HEADER/BODY_TIMEOUT_S for the idle check")
    p.add_argument("--slack", type=float, default=1.0, help="seconds past the timeout a close still counts in time")
    p.add_argument("--connections", type=int, default=1000, help="the high level of the goodput check")
    p.add_argument(
        "--control",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="after each flood, the same attack aimed at a stand-in server: what the attacker's own CPU costs",
    )
    p.add_argument(
        "--server-cpus",
        help="comma-separated CPUs for the service (and the stand-in), one model thread each; the ordinary "
        "clients and the attackers get the other CPUs, the attackers at the idle scheduling class: an attacker "
        "with CPU of its own, as on another host, that never delays the clients measuring the service",
    )
    p.add_argument(
        "--flooder",
        choices=["persistent", "polite"],
        default="persistent",
        help="persistent: the flood writes on whatever the server answers; polite: it stops at the server's "
        "answer and FIN, closes and reconnects at once (what a staged close cannot hold)",
    )
    p.add_argument("--wrk-threads", type=int, default=2)
    p.add_argument("--request-timeout", type=int, default=10, help="seconds before wrk counts a time-out")
    p.add_argument("--ready-timeout", type=float, default=180.0)
    p.add_argument("--out", type=Path, default=Path("reports/hostile.json"))
    args = p.parse_args(argv)
    args.only = [c.strip() for c in args.only.split(",") if c.strip()]
    if unknown := sorted(set(args.only) - set(CHECKS)):
        p.error(f"unknown checks {unknown}; choose from {CHECKS}")
    args.package, args.out = args.package.resolve(), args.out.resolve()
    if args.server_cpus:
        try:
            args.server_cpus = sorted({int(c) for c in args.server_cpus.split(",")})
        except ValueError:
            p.error(f"--server-cpus takes CPU numbers such as 0 or 0,1, got {args.server_cpus!r}")
        usable = os.sched_getaffinity(0)
        if not set(args.server_cpus) < usable:
            p.error(f"--server-cpus {args.server_cpus} must be some, not all, of the usable CPUs {sorted(usable)}")
        args.client_cpus = sorted(usable - set(args.server_cpus))
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the checks, print and write the figures; exit 1 if a target fails."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args = parse_args(argv)
    # 10,000 connections need as many descriptors, here and in the server (it inherits this limit).
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard := resource.getrlimit(resource.RLIMIT_NOFILE)[1], hard))
    if hard != resource.RLIM_INFINITY and args.idle_connections + 256 > hard:
        logger.warning("descriptor limit %d is below %d idle connections + reserve", hard, args.idle_connections)
    report = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "package": args.package.name,
        "backend": args.backend,
        "cpu_count": os.cpu_count(),
        "loadavg_before": os.getloadavg(),
        "options": {k: v for k, v in vars(args).items() if k not in ("package", "out")},
    }
    cpus = os.sched_getaffinity(0)
    try:
        if args.server_cpus:  # the ordinary clients (this process), wrk and the attackers (inherited) stay off them
            os.sched_setaffinity(0, args.client_cpus)
        report |= asyncio.run(run(args))
    finally:
        os.sched_setaffinity(0, cpus)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    md = table(report["targets"])
    where = ""
    if args.server_cpus:
        where = (
            f"The service on CPU {args.server_cpus} ({len(args.server_cpus)} model thread(s)); ordinary clients "
            f"and attackers on CPU {args.client_cpus}, the attackers at the idle scheduling class.\n\n"
        )
    head = f"# Hostile clients\n\n`scripts/hostile.py`, {report['date']}\n\n{where}"
    args.out.with_suffix(".md").write_text(f"{head}{md}\n")
    print(md)
    return 0 if all(r["pass"] is not False for r in report["targets"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
