"""The runtime image's dependency set and CMD, outside Docker: base install only (no torch), `python -m app`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.app.test_shutdown import free_port, wait_ready

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_base_install_serves_onnx_int8_without_torch(tiny_package: Path, tmp_path: Path) -> None:
    # As the Dockerfile's builder stage: copy pyproject.toml, README.md and app/ only, `pip install .`.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "app", src / "app", ignore=shutil.ignore_patterns("__pycache__"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = subprocess.run([str(py), "-m", "pip", "install", "-q", str(src)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    for heavy in ("torch", "transformers", "optimum"):
        probe = subprocess.run([str(py), "-c", f"import {heavy}"], capture_output=True, text=True)
        assert probe.returncode != 0, f"{heavy} is installed in the runtime venv"

    # As the runtime stage: WORKDIR /srv (not the repo, so `app` comes from the venv), CMD python -m app.
    srv = tmp_path / "srv"
    srv.mkdir()
    models = tmp_path / "models"
    shutil.copytree(tiny_package, models / "package")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INTENT_", "PYTHON", "VIRTUAL_ENV"))}
    env |= {"INTENT_HOST": "127.0.0.1", "INTENT_PORT": str(port), "INTENT_MODEL_DIR": str(models / "package")}
    log = tmp_path / "server.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([str(py), "-m", "app"], cwd=srv, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log)
        r = httpx.post(f"{url}/classify", json={"text": "what is the weather like"}, timeout=10)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["backend"] == "onnx-int8"  # the image's default backend
        assert body["intent"] in {"weather", "oos"}
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        assert info["name"] == "tiny-bert"
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()
    where = subprocess.run([str(py), "-c", "import app; print(app.__file__)"], cwd=srv, capture_output=True, text=True)
    assert str(venv) in where.stdout  # the installed package served, not a source tree
