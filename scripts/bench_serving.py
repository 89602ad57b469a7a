"""Serving benchmark: our service vs the naive FastAPI + transformers pipeline, under concurrent load.

Each configuration is started on 127.0.0.1 (one at a time), waited on until ready, warmed up, then
driven at fixed concurrency levels (closed loop: N connections, each sends its next request when
the last answer arrives) for a fixed time each. The load generator is `wrk` (C, one thread, a Lua
script cycling through real CLINC150 test queries: loadtests/wrk_classify.lua); without wrk it
falls back to Locust FastHttpUser across processes (loadtests/bench_locustfile.py), which needs
far more CPU per request and so shares the machine less fairly.

    python scripts/bench_serving.py --teacher artifacts/teacher --student artifacts/student
    python scripts/bench_serving.py --configs noop,student-onnx-int8 --concurrency 1,8 --duration 5

Configurations (`--configs`, comma-separated, run in this order by default):
    noop                       empty FastAPI endpoint (no model): the framework's ceiling, for scale
    naive                      scripts/naive_server.py: transformers pipeline per request, teacher
    teacher-torch              our service, backend torch, teacher package
    student-onnx               our service, backend onnx, student package (micro-batching on)
    student-onnx-int8          our service, backend onnx-int8, student package (micro-batching on)
    student-onnx-int8-nobatch  as above with INTENT_MAX_BATCH_SIZE=1 (batching off)

Workers and threads: our service runs --workers processes on one port (INTENT_WORKERS; one event loop and
one model per process: a process's loop and model thread share one GIL, separate processes do not) with
INTENT_NUM_THREADS=--num-threads model threads each, default cores - 1 (1 on a 2-core box).
Inference runs in one dedicated thread per process; the event loop (HTTP, JSON, tokenization
scheduling) and wrk need CPU at the same time, and ORT's intra-op threads spin while they wait.
Measured on a 2-core machine (3 s runs, onnx-int8, batching on and off, c=8 and c=32, two rounds):
1 thread gave 1.1-2.5x the req/s of 2 threads and lower p99 in every pair. A training job shared that
machine, so re-check with `--num-threads 2` on an idle one. wrk itself costs ~34 us of
CPU per request (about 12% of one core at 3,500 req/s on `noop`, under 4% at the model configs'
rates); its Lua response() hook (--wrk-status-hook) adds ~4 us per request and cut `noop`'s
measured req/s by ~10%, so by default errors come from wrk's own non-2xx/3xx count instead.
The naive server keeps library defaults (PyTorch: one intra-op thread per core, shared by up to 40
request threads): that is the point of a baseline. Everything runs on one machine, so absolute
numbers are a lower bound; compare rows of one run only.

Output: one table on stdout, reports/bench_serving.json (all numbers + run metadata) and
reports/bench_serving.md. Ratios are against `naive` at the same concurrency (req/s: higher is
better; p99: lower is better). `req/s` counts successful (2xx/3xx) answers only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Where compression.data looks for CLINC150's JSON (compression.data.clinc.LOCAL_CANDIDATES): a shared data folder
# beside the checkout, else data/clinc150/ in it; the last one is named in the error when neither exists.
DATA_CANDIDATES = (
    REPO.parent / "shared" / "data" / "clinc150" / "data_oos_plus.json",
    REPO / "data" / "clinc150" / "data_oos_plus.json",
)
DEFAULT_DATA = next((c for c in DATA_CANDIDATES if c.is_file()), DATA_CANDIDATES[-1])
LUA = REPO / "loadtests" / "wrk_classify.lua"
LOCUSTFILE = REPO / "loadtests" / "bench_locustfile.py"
ALL_CONFIGS = ["noop", "naive", "teacher-torch", "student-onnx", "student-onnx-int8", "student-onnx-int8-nobatch"]
OPTIONAL_CONFIGS = ["pruned-onnx-int8"]  # needs --pruned


@dataclass
class Config:
    """How to start one server and how to tell it is ready."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_path: str = "/readyz"
    package: str | None = None
    description: str = ""
    port_flag: bool = False  # takes --port PORT (scripts/naive_server.py) instead of INTENT_PORT
    cwd: Path | None = None  # where the server starts (default: the repository)


def shown(path: Path) -> str:
    """A path as reports print it: relative to the repository when inside it, else its name (no machine paths)."""
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def build_configs(args: argparse.Namespace) -> dict[str, Config]:
    py = sys.executable
    ours = [py, "-m", "app"]
    threads = str(args.num_threads)
    extra = dict(kv.split("=", 1) for kv in args.server_env)

    def service(name: str, package: Path, backend: str, desc: str, **env: str) -> Config:
        return Config(
            name,
            ours,
            {
                "INTENT_MODEL_DIR": str(package),
                "INTENT_BACKEND": backend,
                "INTENT_NUM_THREADS": threads,
                "INTENT_WORKERS": str(args.workers),
                **env,
                **extra,
            },
            "/readyz",
            shown(package),
            desc,
        )

    naive = [py, str(REPO / "scripts" / "naive_server.py")]
    return {
        "noop": Config("noop", [*naive, "--noop"], {}, "/healthz", None, "empty FastAPI endpoint, no model", True),
        "naive": Config(
            "naive",
            [*naive, "--model", str(args.teacher)],
            {},
            "/healthz",
            shown(args.teacher),
            "FastAPI sync endpoint + transformers pipeline per request, teacher",
            True,
        ),
        "teacher-torch": service("teacher-torch", args.teacher, "torch", "our service, torch fp32, teacher"),
        "student-onnx": service("student-onnx", args.student, "onnx", "our service, ONNX fp32, student, batching on"),
        "student-onnx-int8": service(
            "student-onnx-int8", args.student, "onnx-int8", "our service, ONNX int8, student, batching on"
        ),
        "student-onnx-int8-nobatch": service(
            "student-onnx-int8-nobatch",
            args.student,
            "onnx-int8",
            "our service, ONNX int8, student, batching off",
            INTENT_MAX_BATCH_SIZE="1",
        ),
        **(
            {
                "pruned-onnx-int8": service(
                    "pruned-onnx-int8",
                    args.pruned,
                    "onnx-int8",
                    "our service, ONNX int8, structured-pruned student, batching on",
                )
            }
            if args.pruned
            else {}
        ),
    }


# ------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 2.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except Exception:
        return 0


@contextlib.contextmanager
def running_server(cfg: Config, port: int, log_path: Path, ready_timeout: float) -> Iterator[subprocess.Popen]:
    """Start the config's server on 127.0.0.1:port; yield once ready; always stop it (whole process group)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTENT_")}  # no stray settings leak in
    env.update(cfg.env)
    env.update({"INTENT_HOST": "127.0.0.1", "INTENT_PORT": str(port), "PYTHONUNBUFFERED": "1"})
    argv = [*cfg.argv, "--port", str(port)] if cfg.port_flag else cfg.argv
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            argv, cwd=cfg.cwd or REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + ready_timeout
        url = f"http://127.0.0.1:{port}{cfg.ready_path}"
        while get(url) != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"{cfg.name}: server exited with {proc.returncode}; see {log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{cfg.name}: not ready after {ready_timeout:.0f} s; see {log_path}")
            time.sleep(0.25)
        yield proc
    finally:
        stop_process_group(proc)


def stop_process_group(proc: subprocess.Popen, grace: float = 15.0) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process and its live child processes (INTENT_WORKERS > 1), from /proc."""
    total, found = 0.0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(stat.parent.name) == pid or int(fields[1]) == pid:  # fields[1]: the parent pid
                total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
                found = True
        except (OSError, IndexError, ValueError):
            continue
    return total if found else None


# ---------------------------------------------------------------------------------- load generators


def write_bodies(path: Path, data: Path, n: int, oos_share: float | None, seed: int) -> dict[str, Any]:
    """One JSON body per line: in-scope test queries plus out-of-scope ones, shuffled."""
    raw = json.loads(data.read_text(encoding="utf-8"))
    inscope = [(t, False) for t, y in raw["test"] if y != "oos"]
    oos = [(t, True) for t, _ in raw.get("oos_test", [])] + [(t, True) for t, y in raw["test"] if y == "oos"]
    rng = random.Random(seed)
    if oos_share is None:
        items = inscope + oos
        rng.shuffle(items)
        items = items[:n]
    else:
        k = round(n * oos_share)
        items = rng.sample(oos, min(k, len(oos))) + rng.sample(inscope, min(n - k, len(inscope)))
        rng.shuffle(items)
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t, _ in items), encoding="utf-8")
    return {
        "queries": len(items),
        "oos_queries": sum(is_oos for _, is_oos in items),
        "mean_chars": round(sum(len(t) for t, _ in items) / len(items), 1),
    }


def run_wrk(url: str, bodies: Path, connections: int, seconds: int, args: argparse.Namespace) -> dict[str, Any]:
    threads = max(1, min(args.wrk_threads, connections))
    cmd = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        f"--timeout={args.request_timeout}s",
        "-s",
        str(LUA),
        url,
        "--",
        str(bodies),
    ]
    env = dict(os.environ, WRK_COUNT_STATUS="1" if args.wrk_status_hook else "0")
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + args.request_timeout + 30)
    wall = time.perf_counter() - t0
    match = re.search(r"^WRK_RESULT (\{.*\})$", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {(proc.stderr.strip() or proc.stdout.strip())[:300]}")
    r = json.loads(match.group(1))
    duration = r["duration_us"] / 1e6
    ok = r["requests"] - r["status_errors"]
    errors = {k: r[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts", "status_errors") if r[k]}
    return {
        "requests": r["requests"],
        "duration_s": round(duration, 3),
        "wall_s": round(wall, 3),
        "rps": ok / duration if duration else 0.0,
        "mean_ms": r["latency_mean_us"] / 1e3,
        "p50_ms": r["p50_us"] / 1e3,
        "p90_ms": r["p90_us"] / 1e3,
        "p99_ms": r["p99_us"] / 1e3,
        "max_ms": r["latency_max_us"] / 1e3,
        "errors": sum(errors.values()),
        "error_detail": errors,
        **({"status_counts": r["status_counts"]} if "status_counts" in r else {}),
    }


def percentile_from_hist(hist: dict[int, int], q: float) -> float:
    total = sum(hist.values())
    if not total:
        return float("nan")
    rank, seen = q / 100 * total, 0
    for value in sorted(hist):
        seen += hist[value]
        if seen >= rank:
            return float(value)
    return float(max(hist))


def run_locust(url: str, bodies: Path, connections: int, seconds: int, args: argparse.Namespace) -> dict[str, Any]:
    """Fallback: Locust FastHttpUser, wait 0, one user per connection, one worker process per core."""
    base, path = url.split("/", 3)[:3], "/" + url.split("/", 3)[3]
    host = "/".join(base)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "stats"
        cmd = [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--host",
            host,
            "-u",
            str(connections),
            "-r",
            str(connections),
            "-t",
            f"{seconds}s",
            "--stop-timeout",
            "2",
            "--processes",
            str(args.locust_processes),
            "--json-file",
            str(out),
            "--only-summary",
            "--loglevel",
            "WARNING",
        ]
        env = dict(os.environ, BENCH_BODIES=str(bodies), BENCH_PATH=path)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 120)
        wall = time.perf_counter() - t0
        stats_file = Path(f"{out}.json")
        if not stats_file.is_file():
            raise RuntimeError(f"locust failed ({proc.returncode}): {proc.stderr[-2000:]}")
        entries = json.loads(stats_file.read_text())
    hist: dict[int, int] = {}
    n = fails = 0
    total_ms = max_ms = 0.0
    start, last = float("inf"), 0.0
    for e in entries:
        n += e["num_requests"]
        fails += e["num_failures"]
        total_ms += e["total_response_time"]
        max_ms = max(max_ms, e["max_response_time"] or 0.0)
        start, last = min(start, e["start_time"]), max(last, e["last_request_timestamp"] or 0.0)
        for k, v in e["response_times"].items():
            hist[int(float(k))] = hist.get(int(float(k)), 0) + v
    duration = max(last - start, 1e-9) if n else seconds
    return {
        "requests": n,
        "duration_s": round(duration, 3),
        "wall_s": round(wall, 3),
        "rps": (n - fails) / duration,
        "mean_ms": total_ms / n if n else float("nan"),
        "p50_ms": percentile_from_hist(hist, 50),
        "p90_ms": percentile_from_hist(hist, 90),
        "p99_ms": percentile_from_hist(hist, 99),
        "max_ms": max_ms,
        "errors": fails,
        "error_detail": {"failures": fails} if fails else {},
    }


# ------------------------------------------------------------------------------------------- report


def fmt(x: float | None, nd: int = 1) -> str:
    if x is None or x != x:  # None or NaN
        return "-"
    return f"{x:,.{nd}f}"


def add_ratios(rows: list[dict[str, Any]]) -> None:
    naive = {r["concurrency"]: r for r in rows if r["config"] == "naive" and "rps" in r}
    for r in rows:
        base = naive.get(r["concurrency"])
        if base is None or "rps" not in r:
            r["rps_vs_naive"] = r["p99_vs_naive"] = None
            continue
        r["rps_vs_naive"] = r["rps"] / base["rps"] if base["rps"] else None
        r["p99_vs_naive"] = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else None


def table(rows: list[dict[str, Any]], markdown: bool) -> str:
    head = ["config", "conc.", "req/s", "p50 ms", "p99 ms", "errors", "req/s vs naive", "p99 vs naive"]
    body = []
    for r in rows:
        if "rps" not in r:
            body.append([r["config"], str(r["concurrency"]), "failed", "-", "-", "-", "-", "-"])
            continue
        body.append(
            [
                r["config"],
                str(r["concurrency"]),
                fmt(r["rps"]),
                fmt(r["p50_ms"]),
                fmt(r["p99_ms"]),
                str(r["errors"]),
                "-" if r["rps_vs_naive"] is None else f"{r['rps_vs_naive']:.2f}x",
                "-" if r["p99_vs_naive"] is None else f"{r['p99_vs_naive']:.2f}x",
            ]
        )
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in body]
        return "\n".join(lines)
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=False)]
    out = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths, strict=True)))]
    out.append("  ".join("-" * w for w in widths))
    for row in body:
        out.append(
            "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True)))
        )
    return "\n".join(out)


def git_commit() -> str | None:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True).stdout
        return sha.strip() + ("-dirty" if dirty.strip() else "") if sha.strip() else None
    except OSError:
        return None


def package_name(package: Path) -> str | None:
    with contextlib.suppress(OSError, ValueError, KeyError):
        return json.loads((Path(package) / "manifest.json").read_text())["name"]
    return None


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def write_markdown(path: Path, meta: dict[str, Any], rows: list[dict[str, Any]], configs: dict[str, Config]) -> None:
    lines = [
        "# Serving benchmark",
        "",
        f"Generated by `scripts/bench_serving.py` on {meta['date']} (commit {meta['commit']}).",
        f"Machine: {meta['cpu']} x {meta['cpu_count']} cores, load average before the run {meta['loadavg_before']}.",
        f"Load: {meta['loadgen']}, closed loop, {meta['duration_s']} s per level after a {meta['warmup_s']} s warm-up; "
        f"{meta['queries']['queries']} CLINC150 test queries ({meta['queries']['oos_queries']} out of scope) cycled.",
        f"Our service: INTENT_WORKERS={meta.get('workers', 1)}, INTENT_NUM_THREADS={meta['num_threads']} per worker"
        + (f", extra env {meta['server_env']}" if meta["server_env"] else "")
        + "; naive and noop keep library defaults.",
        "",
        table(rows, markdown=True),
        "",
        "Configurations:",
        "",
    ]
    for name in meta["configs"]:
        cfg = configs[name]
        lines.append(f"- `{name}`: {cfg.description}" + (f" (`{cfg.package}`)" if cfg.package else ""))
    lines += [
        "",
        "req/s counts successful answers; p50/p99 are wrk's latency percentiles (closed loop, so they include",
        "queueing at the server but not coordinated omission). Ratios are against `naive` at the same concurrency.",
        "Server and load generator share the machine: compare rows of one run, not absolute numbers across machines.",
        "",
    ]
    path.write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--configs", help=f"comma-separated subset of {ALL_CONFIGS + OPTIONAL_CONFIGS} (default: all that apply)"
    )
    p.add_argument("--concurrency", default="1,8,32,64", help="connection counts, comma-separated")
    p.add_argument("--duration", type=int, default=15, help="seconds per concurrency level")
    p.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded load after startup (0 = none)")
    p.add_argument("--teacher", type=Path, default=REPO / "artifacts" / "teacher")
    p.add_argument("--student", type=Path, default=None, help="default: artifacts/student if present, else --teacher")
    p.add_argument("--workers", type=int, default=1, help="INTENT_WORKERS for our service (processes on one port)")
    p.add_argument(
        "--pruned", type=Path, default=None, help="a further (e.g. structured-pruned) package: adds pruned-onnx-int8"
    )
    p.add_argument(
        "--num-threads",
        type=int,
        default=max(1, (os.cpu_count() or 2) - 1),
        help="INTENT_NUM_THREADS for our service (default: cores - 1; see the module docstring)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for our service's configs (repeatable), e.g. INTENT_MAX_WAIT_MS=5",
    )
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CLINC150 oos-eval JSON")
    p.add_argument("--queries", type=int, default=2000, help="distinct request bodies to cycle through")
    p.add_argument("--oos-share", type=float, default=None, help="share of out-of-scope bodies (default: as in test)")
    p.add_argument("--loadgen", choices=["auto", "wrk", "locust"], default="auto")
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (capped at the connection count)")
    p.add_argument("--wrk-status-hook", action="store_true", help="count every status code in Lua (slower wrk)")
    p.add_argument("--locust-processes", type=int, default=-1, help="Locust worker processes for the fallback")
    p.add_argument("--request-timeout", type=int, default=30, help="seconds before a request counts as timed out")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=REPO / "reports", help="folder for bench_serving.{json,md} and logs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.student is None:
        student = REPO / "artifacts" / "student"
        args.student = student if (student / "manifest.json").is_file() else args.teacher
    if args.configs is None:
        args.config_list = ALL_CONFIGS + (OPTIONAL_CONFIGS if args.pruned else [])
    else:
        args.config_list = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = sorted(set(args.config_list) - set(ALL_CONFIGS + OPTIONAL_CONFIGS))
    if unknown:
        p.error(f"unknown configs {unknown}; choose from {ALL_CONFIGS + OPTIONAL_CONFIGS}")
    if "pruned-onnx-int8" in args.config_list and args.pruned is None:
        p.error("pruned-onnx-int8 needs --pruned PACKAGE")
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency needs positive integers")
    for kv in args.server_env:
        if "=" not in kv:
            p.error(f"--server-env expects KEY=VALUE, got {kv!r}")
    needs = {"naive": args.teacher, "teacher-torch": args.teacher}
    needs.update({c: args.student for c in args.config_list if c.startswith("student")})
    needs.update({c: args.pruned for c in args.config_list if c.startswith("pruned")})
    for cfg, pkg in needs.items():
        if cfg in args.config_list and not (Path(pkg) / "manifest.json").is_file():
            p.error(f"{cfg}: no model package at {pkg} (pass --teacher / --student)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    loadgen = args.loadgen
    if loadgen == "auto":
        loadgen = "wrk" if shutil.which("wrk") else "locust"
    if loadgen == "wrk" and not shutil.which("wrk"):
        print("bench_serving: wrk not found (apt-get install wrk), use --loadgen locust", file=sys.stderr)
        return 2
    drive = run_wrk if loadgen == "wrk" else run_locust
    configs = build_configs(args)
    args.out.mkdir(parents=True, exist_ok=True)
    logs = args.out / "bench_serving_logs"

    meta: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "python": platform.python_version(),
        "loadgen": (
            f"wrk ({args.wrk_threads} thread{'s' if args.wrk_threads > 1 else ''}"
            f"{', status hook' if args.wrk_status_hook else ''})"
            if loadgen == "wrk"
            else f"locust FastHttpUser ({args.locust_processes} processes)"
        ),
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        "concurrency": args.levels,
        "num_threads": args.num_threads,
        "workers": args.workers,
        "server_env": args.server_env,
        "pruned": shown(args.pruned) if args.pruned else None,
        "teacher": shown(args.teacher),
        "teacher_package": package_name(args.teacher),
        "student": shown(args.student),
        "student_package": package_name(args.student),
        "configs": args.config_list,
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        bodies = Path(tmp) / "bodies.jsonl"
        meta["queries"] = write_bodies(bodies, args.data, args.queries, args.oos_share, args.seed)
        print(
            f"bench_serving: {loadgen}, levels {args.levels} x {args.duration:g} s, configs {args.config_list}",
            flush=True,
        )
        for name in args.config_list:
            cfg = configs[name]
            port = free_port()
            url = f"http://127.0.0.1:{port}/classify"
            t0 = time.perf_counter()
            try:
                with running_server(cfg, port, logs / f"{name}.log", args.ready_timeout) as proc:
                    print(f"[{name}] ready in {time.perf_counter() - t0:.1f} s on port {port}", flush=True)
                    if args.warmup > 0:
                        drive(url, bodies, min(8, max(args.levels)), args.warmup, args)
                    for level in args.levels:
                        if proc.poll() is not None:
                            rows.append({"config": name, "concurrency": level, "error": "server exited"})
                            continue
                        cpu0, w0 = cpu_seconds(proc.pid), time.perf_counter()
                        try:
                            result = drive(url, bodies, level, args.duration, args)
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            rows.append({"config": name, "concurrency": level, "error": str(exc)[:500]})
                            print(f"[{name}] c={level}: {exc}", flush=True)
                            continue
                        cpu1, w1 = cpu_seconds(proc.pid), time.perf_counter()
                        if cpu0 is not None and cpu1 is not None:
                            result["server_cpu_pct"] = round(100 * (cpu1 - cpu0) / (w1 - w0), 1)
                        rows.append({"config": name, "concurrency": level, **result})
                        print(
                            f"[{name}] c={level:<3d} {result['rps']:9.1f} req/s  p50 {result['p50_ms']:8.1f} ms  "
                            f"p99 {result['p99_ms']:8.1f} ms  errors {result['errors']}  "
                            f"server cpu {result.get('server_cpu_pct', '-')}%",
                            flush=True,
                        )
            except RuntimeError as exc:
                print(f"[{name}] {exc}", file=sys.stderr, flush=True)
                rows.extend({"config": name, "concurrency": level, "error": str(exc)} for level in args.levels)
    add_ratios(rows)
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())

    print()
    print(table(rows, markdown=False))
    json_path, md_path = args.out / "bench_serving.json", args.out / "bench_serving.md"
    json_path.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n", encoding="utf-8")
    write_markdown(md_path, meta, rows, configs)
    print(f"\nwrote {json_path} and {md_path} (server logs in {logs})")
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
