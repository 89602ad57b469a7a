"""Without a reachable hub, hub ids and dataset names fail at once with one line, not after minutes of retries."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compression import hub
from tests.app.test_shutdown import free_port

ROOT = Path(__file__).resolve().parents[2]
OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")


def test_the_probe_sees_a_listening_host_and_a_closed_port() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert hub.hub_reachable(f"http://127.0.0.1:{server.getsockname()[1]}")
    assert not hub.hub_reachable(f"http://127.0.0.1:{free_port()}")
    assert not hub.hub_reachable("not a url")


def test_offline_mode_is_set_only_when_the_user_set_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "went_offline", False)
    for name in OFFLINE_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the user's choice stands, reachable or not
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    assert not hub.offline_unless_reachable()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub.offline_unless_reachable()
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub.went_offline


def test_a_dataset_name_without_a_hub_ends_the_command_at_once(tiny_package: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in OFFLINE_VARS}
    env |= {"HF_ENDPOINT": f"http://127.0.0.1:{free_port()}", "HF_HOME": str(tiny_package.parent / "hf-home")}
    start = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "compression", "calibrate", "--package", str(tiny_package), "--data", "nosuch/set"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.perf_counter() - start
    assert out.returncode == 1
    assert "Retrying" not in out.stderr  # huggingface_hub retries a refused connection five times, ~25 s
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m compression: error: --data: ")
    assert last.endswith(f"{hub.OFFLINE_HINT}: pass a local data file")
    assert elapsed < 20, elapsed
