"""Hostile HTTP clients against the real server process: bounded headers, pipelining, read time and connections."""

from __future__ import annotations

import contextlib
import json
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.app.test_shutdown import free_port, server_env, wait_ready

ROOT = Path(__file__).resolve().parents[2]
MIB = 1024 * 1024


def rss(pid: int) -> int:
    """Resident set size of a process in bytes (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@contextlib.contextmanager
def server(
    package: Path, tmp_path: Path, nofile: int | None = None, uvicorn_http: str | None = None, **env: str
) -> Iterator[tuple[int, int, Path]]:
    """`python -m app` (or uvicorn's CLI with this `--http`) on the tiny package (onnx); yields (port, pid, log)."""
    port, log = free_port(), tmp_path / "server.log"
    argv = [sys.executable, "-m", "app"]
    if uvicorn_http:
        argv = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port), "--http", uvicorn_http]
    settings = {"INTENT_BACKEND": "onnx", "INTENT_WARMUP_RUNS": "1", **env}

    def limit_descriptors() -> None:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    with log.open("w") as fh:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=server_env(package, port, **settings),
            stdout=fh,
            stderr=subprocess.STDOUT,
            preexec_fn=limit_descriptors,
        )
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}", log, timeout=180)  # generous: a loaded CI machine
        yield port, proc.pid, log
        assert proc.poll() is None, log.read_text()  # the server survived whatever the test did
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection (or the timeout)."""
    sock.settimeout(timeout)
    chunks = []
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def healthz_seconds(port: int) -> float:
    start = time.monotonic()
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=10)
    assert r.status_code == 200
    return time.monotonic() - start


@pytest.mark.parametrize(
    "line",
    [
        pytest.param(b"X-Pad: " + b"a" * 1000 + b"\r\n", id="many-header-lines"),
        pytest.param(b"a" * 1024, id="one-endless-header-value"),
    ],
)
def test_an_endless_header_section_gets_431_and_costs_no_memory(
    line: bytes, tiny_package: Path, tmp_path: Path
) -> None:
    with server(tiny_package, tmp_path, INTENT_MAX_HEADERS="10000") as (port, pid, log):
        before = rss(pid)
        sent = 0
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Long: ")
            sock.settimeout(5)
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                while sent < 64 * MIB:  # what used to grow the server by gigabytes stops at the first 16 KiB
                    sock.sendall(line * 64)
                    sent += len(line) * 64
            answer = read_response(sock)
        grown = rss(pid) - before
        took = healthz_seconds(port)  # another client is served at once
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    assert b'"code": "headers_too_large"' in answer
    assert sent < 8 * MIB  # refused early, not after the client gave up
    assert grown < 50 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"
    assert took < 2.0
    assert "431" in log.read_text()  # a refusal is logged (rate-limited)


def test_a_head_over_the_byte_limit_gets_431_even_when_it_arrives_in_one_read(
    tiny_package: Path, tmp_path: Path
) -> None:
    # The default limit is 16 KiB; a read is up to 256 KiB, so a whole oversized head can arrive in one.
    def head(target: bytes, value_bytes: int) -> bytes:
        return (
            b"GET "
            + target
            + b" HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: "
            + b"a" * value_bytes
            + b"\r\n\r\n"
        )

    heads = {
        "15 KB header": head(b"/healthz", 15_000),
        "17 KB header": head(b"/healthz", 17_000),
        "100 KB header": head(b"/healthz", 100_000),
        "200 KB header": head(b"/healthz", 200_000),
        "100 KB target": head(b"/healthz?" + b"q" * 100_000, 10),
    }
    with server(tiny_package, tmp_path) as (port, _, _):
        answers = {}
        for name, data in heads.items():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(data)
                answers[name] = read_response(sock)
        took = healthz_seconds(port)
    statuses = {name: answer[9:12] for name, answer in answers.items()}
    assert statuses == {"15 KB header": b"200", **{name: b"431" for name in list(heads)[1:]}}, statuses
    assert all(b'"code": "headers_too_large"' in answers[name] for name in list(heads)[1:])
    assert took < 2.0


def test_too_many_header_fields_get_431(tiny_package: Path, tmp_path: Path) -> None:
    with server(tiny_package, tmp_path, INTENT_MAX_HEADERS="20") as (port, _, _):
        ok = b"".join(b"X-%d: v\r\n" % i for i in range(15))
        too_many = b"".join(b"X-%d: v\r\n" % i for i in range(25))
        answers = []
        for extra in (ok, too_many):
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n" + extra + b"\r\n")
                answers.append(read_response(sock))
    assert answers[0].startswith(b"HTTP/1.1 200 "), answers[0][:200]
    assert answers[1].startswith(b"HTTP/1.1 431 "), answers[1][:200]
    assert b"more than 20 header fields" in answers[1]


def test_uvicorns_cli_gets_the_same_limits_from_the_guard_protocol(tiny_package: Path, tmp_path: Path) -> None:
    env = {"INTENT_MAX_HEADERS": "20", "INTENT_HEADER_TIMEOUT_S": "1"}
    with server(tiny_package, tmp_path, uvicorn_http="app.guard:HttpProtocol", **env) as (port, _, _):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            fields = b"".join(b"X-%d: v\r\n" % i for i in range(25))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")
            too_many = read_response(sock)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            start = time.monotonic()
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Ty")
            half_head, took = read_response(sock, timeout=8), time.monotonic() - start
        r = httpx.post(f"http://127.0.0.1:{port}/classify", json={"text": "please transfer my money"}, timeout=10)
    assert too_many.startswith(b"HTTP/1.1 431 "), too_many[:200]
    assert half_head.startswith(b"HTTP/1.1 408 "), half_head[:200]
    assert took < 5, took
    assert r.json()["intent"] == "transfer"


def test_a_pipelining_flood_is_cut_off_and_memory_stays_flat(tiny_package: Path, tmp_path: Path) -> None:
    with server(tiny_package, tmp_path, INTENT_MAX_PIPELINED="8") as (port, pid, _):
        before = rss(pid)
        request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
        stop = time.monotonic() + 4
        sent = [0]

        with socket.create_connection(("127.0.0.1", port)) as sock:

            def flood() -> None:
                with contextlib.suppress(OSError):
                    while time.monotonic() < stop:
                        sock.sendall(request * 2000)
                        sent[0] += 2000

            sender = threading.Thread(target=flood, daemon=True)
            sender.start()
            answer = read_response(sock, timeout=8)
            sender.join(timeout=10)
        grown = rss(pid) - before
        took = healthz_seconds(port)
    answered = answer.count(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == answered  # nothing but the answers, in order
    # The request in progress when the depth was passed, and at most the few answered before that.
    assert 1 <= answered <= 9, answered
    assert answer.endswith(b'{"status":"ok"}')  # whole responses, then the close
    assert sent[0] > answered  # the flood went on; the rest was read and dropped
    assert grown < 50 * MIB, f"RSS grew by {grown / MIB:.0f} MiB"
    assert took < 2.0


def test_past_the_pipelining_depth_only_the_request_in_progress_is_answered(tiny_package: Path, tmp_path: Path) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with server(tiny_package, tmp_path, INTENT_MAX_PIPELINED="4") as (port, _, _):
        # Within the depth (one answered, four queued behind it): all five answered, the connection kept.
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request * 5)
            sock.settimeout(10)
            got = b""
            while got.count(b"HTTP/1.1 200 ") < 5 or not got.endswith(b'{"status":"ok"}'):
                got += sock.recv(65536)
            sock.sendall(request)
            again = sock.recv(65536)
        # One past it: the request in progress is answered, the four queued behind it are dropped, and the
        # connection closes; the client resends them (answering them is what a pipelining flood wants).
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(request * 6)  # one write: the server reads all six at once
            answer = read_response(sock, timeout=8)
    assert got.count(b"HTTP/1.1 ") == 5
    assert again.startswith(b"HTTP/1.1 200 ")
    assert answer.count(b"HTTP/1.1 ") == 1, answer
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"status":"ok"}')


def test_slow_and_idle_connections_are_timed_out(tiny_package: Path, tmp_path: Path) -> None:
    env = {"INTENT_HEADER_TIMEOUT_S": "1.5", "INTENT_BODY_TIMEOUT_S": "1.5", "INTENT_KEEP_ALIVE_S": "5"}
    with server(tiny_package, tmp_path, **env) as (port, _, _):
        kinds = {
            "idle": b"",
            "half-head": b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Ty",
            "half-body": b'POST /classify HTTP/1.1\r\nHost: t\r\nContent-Length: 40\r\n\r\n{"text": "wea',
        }
        socks = {kind: [socket.create_connection(("127.0.0.1", port)) for _ in range(30)] for kind in kinds}
        start = time.monotonic()
        for kind, data in kinds.items():
            for sock in socks[kind]:
                if data:
                    sock.sendall(data)
        deadline = start + 8  # one bound for all 90 reads, so a server that never closes fails in seconds
        answers = {
            kind: [read_response(s, timeout=max(0.01, deadline - time.monotonic())) for s in group]
            for kind, group in socks.items()
        }
        took = time.monotonic() - start
        for group in socks.values():
            for sock in group:
                sock.close()
        healthz_seconds(port)
    assert took < 8, took  # all closed by the server around the 1.5 s timeouts, not left open
    assert answers["idle"] == [b""] * 30  # never sent anything: closed without a word
    for kind in ("half-head", "half-body"):
        assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers[kind]), (kind, answers[kind][0][:200])
        assert all(b'"code": "request_timeout"' in a for a in answers[kind])


def test_a_keep_alive_client_with_slow_gaps_is_not_cut_off(tiny_package: Path, tmp_path: Path) -> None:
    # The header clock starts at a request's first byte, not at the end of the previous response.
    env = {"INTENT_HEADER_TIMEOUT_S": "1", "INTENT_KEEP_ALIVE_S": "10"}
    with server(tiny_package, tmp_path, **env) as (port, _, _), httpx.Client(timeout=10) as client:
        statuses = []
        for _ in range(3):
            statuses.append(client.get(f"http://127.0.0.1:{port}/healthz").status_code)
            time.sleep(1.5)
        r = client.post(f"http://127.0.0.1:{port}/classify", json={"text": "what is the weather"})
        statuses.append(r.status_code)
        assert statuses == [200, 200, 200, 200], statuses
        assert client.get(f"http://127.0.0.1:{port}/metrics").status_code == 200


def test_idle_connections_cannot_exhaust_descriptors(tiny_package: Path, tmp_path: Path) -> None:
    # 300 idle connections against a 256-descriptor server: the default limit (256 less a 64 reserve) refuses
    # the excess at once with a 503; after the header timeout the slots free up and a real client is served.
    with server(tiny_package, tmp_path, nofile=256, INTENT_HEADER_TIMEOUT_S="2") as (port, _, log):
        socks = []
        try:
            for _ in range(300):
                socks.append(socket.create_connection(("127.0.0.1", port)))
            refused = []
            deadline = time.monotonic() + 5
            for sock in socks[-60:]:
                refused.append(read_response(sock, timeout=max(0.01, deadline - time.monotonic())))
            deadline = time.monotonic() + 15
            while True:  # wait for the idle ones to be closed by the server
                time.sleep(0.5)
                try:
                    took = healthz_seconds(port)
                    break
                except (httpx.TransportError, AssertionError):
                    assert time.monotonic() < deadline, log.read_text()[-2000:]
        finally:
            for sock in socks:
                sock.close()
    assert sum(a.startswith(b"HTTP/1.1 503 ") for a in refused) >= 50, refused[-1][:200]
    assert b'"code": "overloaded"' in refused[-1]
    assert b"retry-after: 1" in refused[-1]
    assert took < 2.0
    output = log.read_text()
    assert "connection limit reached" in output
    assert "out of system resource" not in output
    assert "Too many open files" not in output


@pytest.mark.parametrize("flood", ["headers", "pipeline"])
def test_a_refused_flood_is_closed_in_stages_and_held(flood: str, tiny_package: Path, tmp_path: Path) -> None:
    from app.guard import LINGER_S

    if flood == "headers":
        start, chunk = b"GET /healthz HTTP/1.1\r\nHost: t\r\n", b"X-Pad: " + b"a" * 1000 + b"\r\n"
    else:
        start, chunk = b"", b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with server(tiny_package, tmp_path, INTENT_MAX_PIPELINED="4") as (port, _, _):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            cut_off = [0.0]

            def keep_sending() -> None:  # a flooder: ignores `connection: close` and the FIN, sends until it fails
                try:
                    sock.sendall(start)
                    while True:
                        sock.sendall(chunk * 64)
                except OSError:
                    cut_off[0] = time.monotonic()

            sender = threading.Thread(target=keep_sending, daemon=True)
            sender.start()
            sock.settimeout(10)
            answer = b""
            while chunk_in := sock.recv(65536):  # b"": the server's FIN, after its whole answer
                answer += chunk_in
            answered = time.monotonic()
            sender.join(timeout=LINGER_S + 10)
        took = healthz_seconds(port)
    status = b"431" if flood == "headers" else b"200"
    assert answer.startswith(b"HTTP/1.1 " + status), answer[:200]
    assert answer.count(b"HTTP/1.1 ") == 1, answer[-200:]
    assert answer.endswith(b"}"), answer[-200:]  # one whole answer, then FIN
    assert b"connection: close" in answer.lower()
    # Held, not cut off at once: a flooder cannot come straight back, while other clients are served.
    held = cut_off[0] - answered
    assert LINGER_S - 0.5 <= held <= LINGER_S + 3, held
    assert took < 2.0


def one_write(package: Path, tmp_path: Path, data: bytes) -> tuple[bytes, float, str]:
    """Send `data` in one write to a fresh server: (all it answers, seconds another client then waits, its log)."""
    with server(package, tmp_path) as (port, _, log):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(data)
            answer = read_response(sock)
        took = healthz_seconds(port)
    return answer, took, log.read_text()


@pytest.mark.parametrize("before", [0, 1, 3], ids=["garbage-alone", "after-one", "after-three"])
def test_invalid_input_is_answered_400_after_the_valid_requests_before_it(
    before: int, tiny_package: Path, tmp_path: Path
) -> None:
    body = b'{"text": "please transfer my money"}'
    valid = b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
    answer, took, logged = one_write(
        tiny_package, tmp_path, valid % (len(body), body) * before + b"NOT HTTP \x00\x01\r\n\r\n"
    )
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)
    # Every request sent before the invalid input is answered, in order; then 400 in the service's envelope.
    assert statuses == [b"200"] * before + [b"400"], answer[-300:]
    assert answer.count(b'"intent": "transfer"') + answer.count(b'"intent":"transfer"') == before
    assert re.search(
        rb'\{"error": \{"code": "invalid_http", "message": "the request is not valid HTTP/1.1", '
        rb'"request_id": "[0-9a-f]{16}"\}\}$',
        answer,
    ), answer[-300:]
    assert took < 2.0
    assert "not valid HTTP/1.1" in logged
    assert "Traceback" not in logged, logged[-2000:]
    assert "unhandled error" not in logged, logged[-2000:]


def test_a_request_line_of_another_http_version_is_invalid_input(tiny_package: Path, tmp_path: Path) -> None:
    """httptools parses any digit.digit version; HTTP/2.0 and 3.0 on an HTTP/1 connection were answered 200."""
    valid = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    answer, _, logged = one_write(tiny_package, tmp_path, valid + b"GET /healthz HTTP/2.0\r\nHost: t\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200", b"400"], answer
    assert b'"code": "invalid_http"' in answer
    assert "Traceback" not in logged
    old, _, _ = one_write(tiny_package, tmp_path, b"GET /healthz HTTP/1.0\r\n\r\n")
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", old) == [b"200"], old  # HTTP/1.0 is still HTTP/1


@pytest.mark.parametrize("before", [0, 1], ids=["in-progress", "queued"])
def test_a_body_cut_short_by_invalid_input_gets_400_and_the_request_is_dropped(
    before: int, tiny_package: Path, tmp_path: Path
) -> None:
    valid = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    head = b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    # The chunked body breaks off mid-way, in the request in progress or in one queued behind another.
    answer, took, logged = one_write(tiny_package, tmp_path, valid * before + head + b'5\r\n{"tex\r\nZZZ no size\r\n')
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", answer) == [b"200"] * before + [b"400"], answer
    assert b'"code": "invalid_http"' in answer
    assert took < 2.0
    assert "Traceback" not in logged


def refusals(port: int) -> dict[str, float]:
    """intent_http_refusals_total by reason, from the server's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    found = re.findall(r'^intent_http_refusals_total\{reason="(\w+)"\} (\S+)$', text, re.MULTILINE)
    return {reason: float(value) for reason, value in found}


def test_every_refusal_is_counted_by_reason(tiny_package: Path, tmp_path: Path) -> None:
    from app.guard import LINGER_S, REFUSAL_REASONS

    env = {"INTENT_MAX_HEADERS": "20", "INTENT_MAX_PIPELINED": "2", "INTENT_MAX_CONNECTIONS": "4"}
    request = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    with server(tiny_package, tmp_path, INTENT_HEADER_TIMEOUT_S="1", **env) as (port, _, _):
        before = refusals(port)
        answers = {}
        for reason, data in {
            "headers_too_large": b"GET /healthz HTTP/1.1\r\n"
            + b"".join(b"X-%d: v\r\n" % i for i in range(25))
            + b"\r\n",
            "invalid_http": b"\x16\x03\x01 not http\r\n\r\n",
            "pipelining": request * 6,
            "read_timeout": b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Half",
        }.items():
            with socket.create_connection(("127.0.0.1", port)) as sock:
                sock.sendall(data)
                answers[reason] = read_response(sock, timeout=5)
        time.sleep(LINGER_S + 0.5)  # the refused floods' connections are held that long (a staged close)
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            with socket.create_connection(("127.0.0.1", port)) as sock:
                answers["connection_limit"] = read_response(sock, timeout=5)
        finally:
            for sock in idle:
                sock.close()
        time.sleep(0.5)  # the server sees the idle ones go
        after = refusals(port)
    assert before == dict.fromkeys(REFUSAL_REASONS, 0.0)  # every reason is exported from the start, at 0
    assert answers["headers_too_large"].startswith(b"HTTP/1.1 431 ")
    assert answers["invalid_http"].startswith(b"HTTP/1.1 400 ")
    assert answers["pipelining"].count(b"HTTP/1.1 200 ") == 1
    assert answers["read_timeout"].startswith(b"HTTP/1.1 408 ")
    assert answers["connection_limit"].startswith(b"HTTP/1.1 503 ")
    for reason in ("headers_too_large", "invalid_http", "read_timeout", "connection_limit"):
        head, _, body = answers[reason].partition(b"\r\n\r\n")
        header_id = re.search(rb"\r\nx-request-id: ([0-9a-f]{16})\r\n", head)
        assert header_id is not None, (reason, head)
        assert json.loads(body)["error"]["request_id"] == header_id[1].decode(), reason  # the envelope, as elsewhere
    counted = {reason: after[reason] - before[reason] for reason in REFUSAL_REASONS}
    # The idle connections may also time out (1 s) before they are closed: at least the half-sent head's.
    assert counted.pop("read_timeout") >= 1
    assert counted == {"connection_limit": 1, "headers_too_large": 1, "pipelining": 1, "invalid_http": 1}
