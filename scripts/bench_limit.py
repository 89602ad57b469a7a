"""How close the service comes to its limit: E = service / L, with L = 1 / (1/F + 1/M).

F is a do-nothing FastAPI endpoint (scripts/naive_server.py --noop, same event loop and HTTP parser),
M the package's model alone (its backend and threads, batch 1, the same query mix, no HTTP), and the
service is `python -m app` on the package. A request to the service costs at least one empty request
plus one model call, so L is the most any server written in Python on this stack could answer; E says
how much of it the service reaches. Each configuration is measured with the same number of processes:
w workers for the service, w noop processes sharing the port (SO_REUSEPORT, as the service's workers
do) and w model-alone processes running at once.

At c=1 the model is also timed paced: idle for F's p50 before each call, as a lone client leaves it between
requests (an idle model answers slower than one called back to back). F + that p50 is the paced floor.

Every server is started once and kept up; within a round the levels alternate F, service, F,
service ..., then M; `--rounds` repeats that and the figures are the median over rounds, so slow
drift of the machine hits all three alike.

    python scripts/bench_limit.py --package artifacts/student-l3 --workers 1,2 --concurrency 1,8,32,64
    python scripts/bench_limit.py --package artifacts/student-l3 --workers 1 --profile 15

`--profile S` then samples the service (py-spy, every thread and worker) for S seconds at the highest
level and prints the functions with the most samples (own and inclusive). `--peer infinity` adds
infinity-emb serving the same package (scripts/peer_infinity.py; installed in its own virtualenv).

Output: a table on stdout, reports/bench_limit.{json,md} (and bench_limit_profile.txt with --profile).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.bench_serving import (  # noqa: E402
    DEFAULT_DATA,
    Config,
    cpu_model,
    fmt,
    free_port,
    get,
    git_commit,
    run_wrk,
    running_server,
    shown,
    stop_process_group,
    write_bodies,
)

PROFILE_TOP = 25


# ------------------------------------------------------------------------------------- model alone


def model_alone(package: Path, backend: str, threads: int, bodies: Path, seconds: float, gap_s: float = 0.0) -> dict:
    """Closed loop over the bodies' texts, batch 1, in this process: queries/s and latency percentiles.

    With `gap_s`, the model sits idle that long before each call (timed without the gap): the pace a lone client
    sets, whose requests leave the model idle while their HTTP work is done. Prints `ready` once loaded and waits
    for a line on stdin, so that several processes start together.
    """
    from app.backends.base import load_backend

    texts = [json.loads(line)["text"] for line in bodies.read_text(encoding="utf-8").splitlines() if line]
    model = load_backend(backend, package, threads)
    model.warmup(3)
    print("ready", flush=True)
    sys.stdin.readline()
    latencies: list[float] = []
    t0 = time.perf_counter()
    end = t0 + seconds
    i = 0
    while time.perf_counter() < end:
        if gap_s:
            time.sleep(gap_s)
        t = time.perf_counter()
        model.predict_logits([texts[i % len(texts)]])
        latencies.append(time.perf_counter() - t)
        i += 1
    wall = time.perf_counter() - t0
    latencies.sort()
    return {
        "queries": len(latencies),
        "qps": len(latencies) / wall,
        "p50_ms": 1e3 * latencies[len(latencies) // 2],
        "mean_ms": 1e3 * sum(latencies) / len(latencies),
    }


def run_model_alone(args: argparse.Namespace, workers: int, bodies: Path, gap_s: float = 0.0) -> dict[str, Any]:
    """M for `workers` processes at once: their summed queries/s, the median process's p50 and mean."""
    argv = [sys.executable, str(Path(__file__).resolve()), "model-alone", "--package", str(args.package),
            "--backend", args.backend, "--num-threads", str(args.num_threads), "--bodies", str(bodies),
            "--duration", str(args.duration), "--gap", repr(gap_s)]  # fmt: skip
    procs = [
        subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT)
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"model-alone run exited with code {proc.wait()} before it was ready")
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        results = []
        for proc in procs:
            out, _ = proc.communicate(timeout=args.duration + 60)
            if proc.returncode != 0:
                raise RuntimeError(f"model-alone run failed with exit code {proc.returncode}")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return {
        "qps": sum(r["qps"] for r in results),
        "p50_ms": statistics.median(r["p50_ms"] for r in results),
        "mean_ms": statistics.median(r["mean_ms"] for r in results),
    }


# ----------------------------------------------------------------------------------------- servers


@contextlib.contextmanager
def noop_servers(workers: int, logs: Path) -> Iterator[int]:
    """`workers` do-nothing FastAPI processes on one port; yields the port."""
    port = free_port()
    argv = [sys.executable, str(ROOT / "scripts" / "naive_server.py"), "--noop", "--port", str(port)]
    procs = []
    try:
        for i in range(workers):
            log = open(logs / f"noop-{workers}w-{i}.log", "w")  # noqa: SIM115 (closed with the process)
            procs.append(
                subprocess.Popen(
                    [*argv, "--reuse-port"], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
        deadline = time.monotonic() + 60
        while get(f"http://127.0.0.1:{port}/healthz") != 200 or not all(p.poll() is None for p in procs):
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"noop server did not start; see {logs}")
            time.sleep(0.2)
        time.sleep(1.0)  # every process listening, not only the first
        yield port
    finally:
        for proc in procs:
            stop_process_group(proc)


def service_config(args: argparse.Namespace, workers: int) -> Config:
    """Our service on the package with `workers` processes."""
    env = {
        "INTENT_MODEL_DIR": str(args.package),
        "INTENT_BACKEND": args.backend,
        "INTENT_NUM_THREADS": str(args.num_threads),
        "INTENT_WORKERS": str(workers),
        **dict(kv.split("=", 1) for kv in args.server_env),
    }
    return Config(f"service-{workers}w", [sys.executable, "-m", "app"], env, "/readyz", shown(args.package))


# ----------------------------------------------------------------------------------------- profile


def fold(raw: str) -> tuple[Counter[str], Counter[str], int]:
    """py-spy's raw output (`frame;frame;... count`) -> samples per function: own and inclusive, plus the total."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [function_name(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return own, inclusive, total


def function_name(frame: str) -> str:
    """`handle (uvicorn/protocols/http/httptools_impl.py:123)` -> `handle (uvicorn/.../httptools_impl.py)`."""
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    if str(ROOT) in path:
        path = str(Path(path).relative_to(ROOT))
    return f"{name} ({path})" if path else name


def profile_table(raw: str, top: int = PROFILE_TOP) -> str:
    """The functions with the most samples, own and inclusive, as shares of all samples."""
    own, inclusive, total = fold(raw)
    if not total:
        return "no samples"
    lines = [f"{total} samples (every thread of every process, idle threads excluded)", "", "own  function"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in own.most_common(top)]
    lines += ["", "incl function"]
    lines += [f"{100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top)]
    return "\n".join(lines)


def profile_service(proc: subprocess.Popen, url: str, bodies: Path, args: argparse.Namespace) -> str:
    """py-spy samples the service while wrk drives it at the highest level."""
    level = max(args.levels)
    spy_bin = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy_bin).is_file():
        raise RuntimeError("--profile needs py-spy: pip install py-spy")
    with tempfile.NamedTemporaryFile(suffix=".txt") as out:
        spy = subprocess.Popen(
            [spy_bin, "record", "--pid", str(proc.pid), "--subprocesses", "--rate", "250", "--format", "raw",
             "--nonblocking", "--duration", str(args.profile), "--output", out.name],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        time.sleep(1.0)
        run_wrk(url, bodies, level, args.profile, args)
        _, err = spy.communicate(timeout=args.profile + 60)
        if spy.returncode != 0:
            raise RuntimeError(f"py-spy failed: {err.strip()[:300]} (it needs ptrace rights: run as root)")
        return f"service under wrk -c{level} for {args.profile} s\n\n" + profile_table(Path(out.name).read_text())


# --------------------------------------------------------------------------------------- measuring


def limit(f_rps: float, m_qps: float) -> float:
    """L = 1 / (1/F + 1/M): one empty request plus one model call, back to back."""
    return 1.0 / (1.0 / f_rps + 1.0 / m_qps) if f_rps > 0 and m_qps > 0 else float("nan")


def summarize(workers: int, level: int, runs: dict[str, list[dict]], model: list[dict]) -> dict[str, Any]:
    """One table row from the rounds of one (workers, level): medians over rounds, then L and E."""

    def med(kind: str, key: str) -> float:
        values = [r[key] for r in runs.get(kind, [])]
        return statistics.median(values) if values else float("nan")

    row: dict[str, Any] = {
        "workers": workers,
        "concurrency": level,
        "rounds": len(runs["service"]),
        "noop_rps": med("noop", "rps"),
        "noop_p50_ms": med("noop", "p50_ms"),
        "model_qps": statistics.median(m["qps"] for m in model),
        "model_p50_ms": statistics.median(m["p50_ms"] for m in model),
        "paced_model_p50_ms": med("paced_model", "p50_ms"),
        "rps": med("service", "rps"),
        "p50_ms": med("service", "p50_ms"),
        "p99_ms": med("service", "p99_ms"),
        "mean_ms": med("service", "mean_ms"),
        "errors": sum(r["errors"] for r in runs["service"]),
        "rps_per_round": [round(r["rps"], 1) for r in runs["service"]],
    }
    row["limit_rps"] = limit(row["noop_rps"], row["model_qps"])
    row["efficiency"] = row["rps"] / row["limit_rps"]
    row["p99_over_mean"] = row["p99_ms"] / row["mean_ms"] if row["mean_ms"] else float("nan")
    row["floor_p50_ms"] = row["noop_p50_ms"] + row["model_p50_ms"]
    row["paced_floor_p50_ms"] = row["noop_p50_ms"] + row["paced_model_p50_ms"]
    if "peer" in runs:
        row["peer_rps"] = med("peer", "rps")
        row["peer_p99_ms"] = med("peer", "p99_ms")
        row["peer_errors"] = sum(r["errors"] for r in runs["peer"])
        row["vs_peer"] = row["rps"] / row["peer_rps"] if row["peer_rps"] else float("nan")
    return row


def measure(args: argparse.Namespace, workers: int, bodies: dict[str, Path], logs: Path) -> tuple[list[dict], str]:
    """Every round: per level F, service (and the peer), then M; one row per level and the profile if asked."""
    port = free_port()
    service_url = f"http://127.0.0.1:{port}/classify"
    cfg = service_config(args, workers)
    runs: dict[int, dict[str, list[dict]]] = {level: {} for level in args.levels}
    model: list[dict] = []
    profile = ""
    with contextlib.ExitStack() as stack:
        noop_port = stack.enter_context(noop_servers(workers, logs))
        proc = stack.enter_context(running_server(cfg, port, logs / f"{cfg.name}.log", args.ready_timeout))
        targets = {
            "noop": (f"http://127.0.0.1:{noop_port}/classify", bodies["ours"]),
            "service": (service_url, bodies["ours"]),
        }
        if args.peer and workers == 1:
            targets["peer"] = (stack.enter_context(peer_server(args, logs)), bodies["peer"])
        for url, body in targets.values():
            if args.warmup:
                run_wrk(url, body, 8, args.warmup, args)
        for round_ in range(args.rounds):
            for level in args.levels:
                for kind, (url, body) in targets.items():
                    result = run_wrk(url, body, level, args.duration, args)
                    runs[level].setdefault(kind, []).append(result)
                    print(f"[{workers}w r{round_ + 1}] {kind:<7} c={level:<3d} {result['rps']:9.1f} req/s  "
                          f"p50 {result['p50_ms']:7.2f} ms  p99 {result['p99_ms']:7.2f} ms  errors {result['errors']}",
                          flush=True)  # fmt: skip
            model.append(run_model_alone(args, workers, bodies["ours"]))
            print(
                f"[{workers}w r{round_ + 1}] model   {model[-1]['qps']:9.1f} q/s  p50 {model[-1]['p50_ms']:.2f} ms",
                flush=True,
            )
            if 1 in args.levels:
                # A lone client's requests leave the model idle at least an empty request's time between calls.
                gap_s = runs[1]["noop"][-1]["p50_ms"] / 1e3
                paced = run_model_alone(args, workers, bodies["ours"], gap_s)
                runs[1].setdefault("paced_model", []).append(paced)
                print(f"[{workers}w r{round_ + 1}] model, {1e3 * gap_s:.2f} ms idle before each call: "
                      f"p50 {paced['p50_ms']:.2f} ms", flush=True)  # fmt: skip
        if args.profile and workers == args.workers[0]:
            profile = profile_service(proc, service_url, bodies["ours"], args)
    return [summarize(workers, level, runs[level], model) for level in args.levels], profile


@contextlib.contextmanager
def peer_server(args: argparse.Namespace, logs: Path) -> Iterator[str]:
    """infinity-emb serving the same package in its own virtualenv; yields its classify URL."""
    from scripts import peer_infinity

    python = peer_infinity.ensure_venv(args.peer_cache) if args.peer_cache else peer_infinity.ensure_venv()
    folder = peer_infinity.prepare_folder(args.package, args.backend, Path(tempfile.mkdtemp(prefix="peer-")))
    port = free_port()
    argv, env, cwd = peer_infinity.command(python, folder, port, args.num_threads)
    cfg = Config("peer-infinity", argv, env, peer_infinity.READY_PATH, cwd=cwd)
    with running_server(cfg, port, logs / "peer-infinity.log", args.ready_timeout):
        yield f"http://127.0.0.1:{port}{peer_infinity.CLASSIFY_PATH}"


# ------------------------------------------------------------------------------------------ report


def table(rows: list[dict[str, Any]], markdown: bool) -> str:
    """Workers, level, F, M, L, service, E, latencies; the peer's req/s when measured."""
    head = ["workers", "conc.", "F req/s", "M q/s", "L req/s", "service req/s", "E", "p50 ms", "p99 ms", "mean ms",
            "p99/mean", "F+M p50 ms", "F+M paced p50 ms"]  # fmt: skip
    peer = any("peer_rps" in r for r in rows)
    if peer:
        head += ["infinity req/s", "x infinity"]
    body = []
    for r in rows:
        cells = [str(r["workers"]), str(r["concurrency"]), fmt(r["noop_rps"], 0), fmt(r["model_qps"], 0),
                 fmt(r["limit_rps"], 0), fmt(r["rps"], 0), fmt(r["efficiency"], 2), fmt(r["p50_ms"], 2),
                 fmt(r["p99_ms"], 2), fmt(r["mean_ms"], 2), fmt(r["p99_over_mean"], 2), fmt(r["floor_p50_ms"], 2),
                 fmt(r["paced_floor_p50_ms"], 2)]  # fmt: skip
        if peer:
            cells += [fmt(r.get("peer_rps"), 0), fmt(r.get("vs_peer"), 1)]
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---:"] * len(head)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(x) for x in col) for col in zip(head, *body, strict=True)]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in [head, *body])


def json_ready(value: Any) -> Any:
    """The value with every NaN (a figure not measured at that level) as None: strict JSON has no NaN."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def write_reports(out: Path, meta: dict[str, Any], rows: list[dict], profile: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    report = json.dumps(json_ready({"meta": meta, "results": rows}), indent=2, allow_nan=False)
    (out / "bench_limit.json").write_text(report + "\n")
    lines = [
        "# Serving at the model's limit",
        "",
        f"Generated by `scripts/bench_limit.py` on {meta['date']} (commit {meta['commit']}); {meta['cpu']} x "
        f"{meta['cpu_count']} cores. Package `{meta['package']}`, backend {meta['backend']}, "
        f"{meta['num_threads']} model thread(s) per process; wrk closed loop, {meta['duration_s']} s per level, "
        f"median of {meta['rounds']} alternated rounds.",
        "",
        "F: do-nothing FastAPI endpoint; M: the model alone (batch 1, same queries); L = 1/(1/F + 1/M);",
        "E = service / L. F+M p50: the empty endpoint's p50 plus the model's own p50, back to back (the floor at c=1).",
        "F+M paced: the same with the model idle for F's p50 before each call, the pace a lone client sets (c=1 only).",
        "",
        table(rows, markdown=True),
        "",
    ]
    if profile:
        lines += ["Profile (`--profile`): see `bench_limit_profile.txt`.", ""]
        (out / "bench_limit_profile.txt").write_text(profile + "\n")
    (out / "bench_limit.md").write_text("\n".join(lines))


# -------------------------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", nargs="?", choices=["bench", "model-alone"], default="bench", help=argparse.SUPPRESS)
    p.add_argument("--package", type=Path, default=ROOT / "models" / "clinc150-minilm")
    p.add_argument("--backend", default="onnx-int8")
    p.add_argument("--workers", default="1,2", help="service worker counts, comma-separated")
    p.add_argument("--concurrency", default="1,8,32,64", help="connection counts, comma-separated")
    p.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    p.add_argument("--rounds", type=int, default=2, help="alternated rounds; figures are medians over them")
    p.add_argument("--warmup", type=int, default=3, help="seconds of unrecorded load per server")
    p.add_argument("--num-threads", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="model threads")
    p.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE", help="extra service env")
    p.add_argument("--profile", type=int, default=0, metavar="SECONDS", help="py-spy the service afterwards")
    p.add_argument("--peer", choices=["infinity"], help="also measure a peer server on the same package")
    p.add_argument("--peer-cache", type=Path, help="the peer's virtualenv folder (default: peer_infinity's)")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="CLINC150 oos-eval JSON")
    p.add_argument("--queries", type=int, default=2000, help="distinct request bodies to cycle through")
    p.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)  # model-alone: the load's bodies
    p.add_argument("--gap", type=float, default=0.0, help=argparse.SUPPRESS)  # model-alone: idle s before each call
    p.add_argument("--request-timeout", type=int, default=30)
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--out", type=Path, default=ROOT / "reports")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.workers or min(args.workers) < 1 or not args.levels or min(args.levels) < 1:
        p.error("--workers and --concurrency need positive integers")
    if not (args.package / "manifest.json").is_file():
        p.error(f"no model package at {args.package} (a folder with manifest.json)")
    for kv in args.server_env:
        if "=" not in kv:
            p.error(f"--server-env expects KEY=VALUE, got {kv!r}")
    args.wrk_threads, args.wrk_status_hook = 1, False  # what run_wrk reads
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.mode == "model-alone":
        print(
            json.dumps(model_alone(args.package, args.backend, args.num_threads, args.bodies, args.duration, args.gap))
        )
        return 0
    logs = args.out / "bench_limit_logs"
    logs.mkdir(parents=True, exist_ok=True)
    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": git_commit(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "package": shown(args.package),
        "backend": args.backend,
        "num_threads": args.num_threads,
        "duration_s": args.duration,
        "rounds": args.rounds,
        "server_env": args.server_env,
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    rows: list[dict] = []
    profile = ""
    with tempfile.TemporaryDirectory() as tmp:
        bodies = {"ours": Path(tmp) / "bodies.jsonl", "peer": Path(tmp) / "peer.jsonl"}
        meta["queries"] = write_bodies(bodies["ours"], args.data, args.queries, None, 0)
        if args.peer:
            from scripts import peer_infinity

            texts = [json.loads(line)["text"] for line in bodies["ours"].read_text().splitlines()]
            bodies["peer"].write_text("".join(json.dumps(peer_infinity.request_body(t, ".")) + "\n" for t in texts))
        for workers in args.workers:
            found, prof = measure(args, workers, bodies, logs)
            rows += found
            profile = profile or prof
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print()
    print(table(rows, markdown=False))
    if profile:
        print()
        print(profile)
    write_reports(args.out, meta, rows, profile)
    print(f"\nwrote {args.out / 'bench_limit.json'} and {args.out / 'bench_limit.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
