"""The FastAPI conventions: `uvicorn app.main:app` and `fastapi run app/main.py` serve the configured package,
importing the app loads no model, and /docs and /redoc work without internet."""

from __future__ import annotations

import gc
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from app.core.config import Settings
from app.main import create_app
from tests.app.test_shutdown import free_port, server_env, wait_ready

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# Attribute values and JS string literals that name a URL in the docs pages (src=, href=, url: '...').
URL_REFERENCE = re.compile(r"""(?:src|href|url)\s*[:=]\s*["']([^"']+)["']""")
EXTERNAL = re.compile(r"""(?:https?:)?//[\w.-]+""")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets(page: str) -> None:
    app = create_app(Settings(model_dir=Path("no-such-package")))  # the pages need no model
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        r = await client.get(page)
        assert r.status_code == 200
        assert "text/html" in r.headers["content-type"]
        external = EXTERNAL.findall(r.text)
        assert not external, f"{page} loads from outside the service: {external}"
        assets = URL_REFERENCE.findall(r.text)
        assert any(a.endswith(".js") for a in assets), assets  # the UI's script is among what was checked
        assert "/openapi.json" in assets
        for asset in assets:
            got = await client.get(asset)
            assert got.status_code == 200, f"{page} references {asset}: {got.status_code}"
            assert got.content


def test_importing_the_app_loads_no_model(tmp_path: Path) -> None:
    # A package that does not exist: any load at import time would raise.
    env = server_env(tmp_path / "missing", free_port())
    code = "import app.main as m; assert m.app.state.classifier is None and not m.app.state.ready; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"


@pytest.mark.anyio
async def test_lifespan_loads_the_configured_package(tiny_package: Path) -> None:
    app = create_app(Settings(model_dir=tiny_package, backend="onnx", warmup_runs=0))
    assert app.state.classifier is None
    async with app.router.lifespan_context(app):
        assert app.state.ready
        assert app.state.classifier.manifest.name == "tiny-bert"
    assert not app.state.ready


@pytest.mark.anyio
@pytest.mark.parametrize("full_after", [77, 0])
async def test_full_collections_are_set_apart_while_serving_and_restored_after(
    manifest_only_package: Path, full_after: int
) -> None:
    before = gc.get_threshold()
    app = create_app(Settings(model_dir=manifest_only_package, backend="fake", gc_full_after=full_after))
    async with app.router.lifespan_context(app):
        serving = gc.get_threshold()
    assert serving == ((*before[:2], full_after) if full_after else before)
    assert gc.get_threshold() == before


@pytest.mark.parametrize(
    "command",
    [
        ["uvicorn", "app.main:app", "--host", "127.0.0.1", "--port", "{port}"],
        ["fastapi", "run", "app/main.py", "--host", "127.0.0.1", "--port", "{port}"],
    ],
    ids=["uvicorn", "fastapi-run"],
)
def test_standard_servers_serve_the_configured_package(tiny_package: Path, tmp_path: Path, command: list[str]) -> None:
    port, log = free_port(), tmp_path / "server.log"
    argv = [str(BIN / command[0]), *(arg.format(port=port) for arg in command[1:])]
    # INTENT_PORT is deliberately not the port: these servers take theirs from the command line.
    env = server_env(tiny_package, free_port(), INTENT_BACKEND="onnx", INTENT_WARMUP_RUNS="1")
    with log.open("w") as fh:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, log)
        r = httpx.post(f"{url}/classify", json={"text": "what is the weather"}, timeout=10)
        assert r.status_code == 200, r.text
        assert r.json()["model"] == "tiny-bert"
        assert r.json()["backend"] == "onnx"
        info = httpx.get(f"{url}/v1/model", timeout=10).json()
        assert info["name"] == "tiny-bert"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    # The service's own log line, through the handler the module-level app installs at startup.
    assert "ready: serving tiny-bert on backend onnx" in log.read_text()
