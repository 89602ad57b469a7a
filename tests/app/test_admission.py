"""Admission control on the real server: excess classify requests get 429 before their bodies are read."""

from __future__ import annotations

import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from tests.app.test_http_limits import read_response
from tests.app.test_shutdown import free_port, launch, metric, wait_accepted, wait_ready


def test_overload_is_refused_before_the_body_is_read(manifest_only_package: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    # 3 s per model call, one text per call, room for 2 queued texts: 3 classify requests fill the worker
    # for about 9 s.
    env = {
        "INTENT_MAX_BATCH_SIZE": "1",
        "INTENT_MAX_QUEUE": "2",
        "INTENT_MAX_BATCH_TEXTS": "2",
        "INTENT_REQUEST_TIMEOUT_MS": "60000",
    }
    proc = launch(manifest_only_package, port, 3.0, log, **env)
    try:
        wait_ready(proc, url, log, timeout=180)  # generous: a loaded CI machine
        with ThreadPoolExecutor(max_workers=3) as pool:
            held = [
                pool.submit(httpx.post, f"{url}/classify", json={"text": f"weather {i}"}, timeout=60) for i in range(3)
            ]
            wait_accepted(url, 3)
            # Headers only: the body never comes. Refused at once all the same: the 429 does not wait for it.
            refused = []
            start = time.monotonic()
            for _ in range(10):
                with socket.create_connection(("127.0.0.1", port)) as sock:
                    sock.sendall(
                        b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 30\r\nConnection: close\r\n\r\n"
                    )
                    refused.append(read_response(sock, timeout=5))
            took = time.monotonic() - start
            # A batch request too, and a client reusing its connection after the refusal (the unread body is
            # skipped, the next request on the connection is parsed as such).
            with httpx.Client(base_url=url, timeout=10) as client:
                batch = client.post("/classify/batch", json={"texts": ["timer"]})
                health = client.get("/healthz")
            answered = [f.result() for f in held]
        scrape = httpx.get(f"{url}/metrics", timeout=5).text
        after = httpx.post(f"{url}/classify", json={"text": "weather"}, timeout=30)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert took < 8, took  # 10 refusals, none waiting for a body (the server would wait for it forever)
    for answer in refused:
        head, _, body = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 429 "), answer[:200]
        assert b"retry-after: 1" in head
        error = json.loads(body)["error"]
        assert error["code"] == "overloaded"
        assert error["request_id"]
    assert batch.status_code == 429
    assert batch.json()["error"]["code"] == "overloaded"
    assert health.status_code == 200
    assert [r.status_code for r in answered] == [200, 200, 200]  # the admitted ones are served
    assert metric(scrape, "intent_requests_total", endpoint="/classify", status="429") == 10
    assert after.status_code == 200  # recovered once the queue drained


def test_clients_that_send_half_a_body_hold_no_admission_slot(manifest_only_package: Path, tmp_path: Path) -> None:
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    # Room for 3 classify requests in progress; 10 slow senders that never finish their bodies must not take it.
    env = {"INTENT_MAX_BATCH_SIZE": "1", "INTENT_MAX_QUEUE": "2", "INTENT_MAX_BATCH_TEXTS": "2"}
    proc = launch(manifest_only_package, port, 0.0, log, **env)
    slow = []
    try:
        wait_ready(proc, url, log, timeout=180)
        for _ in range(10):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(
                b"POST /classify HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
                b'Content-Length: 40\r\n\r\n{"text": "wea'
            )
            slow.append(sock)
        time.sleep(0.5)  # every head read, every body stalled
        answers = [httpx.post(f"{url}/classify", json={"text": "weather"}, timeout=10) for _ in range(3)]
    finally:
        for sock in slow:
            sock.close()
        proc.terminate()
        proc.wait(timeout=30)
    assert [a.status_code for a in answers] == [200, 200, 200], [a.text for a in answers]
