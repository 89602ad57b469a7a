"""POST /admin/reload: verified atomic swap, refusals that keep the old package serving, the model root."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from app.core.config import Settings
from app.metrics import Metrics
from app.package import PackagePathError, read_manifest, sha256_file, write_manifest
from app.service import IntentClassifier
from tests.app.conftest import running_app

pytestmark = pytest.mark.anyio

KEY = "admin-key"
AUTH = {"authorization": f"Bearer {KEY}"}


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def make_package(dst: Path, source: Path, name: str) -> Path:
    """A fake-backend package whose manifest hashes one extra file, so tampering is detectable."""
    dst.mkdir(parents=True)
    (dst / "notes.txt").write_text(f"package {name}\n")
    manifest = read_manifest(source)
    manifest.name = name
    write_manifest(dst, manifest)
    return dst


@pytest.fixture
def root(tmp_path: Path, manifest_only_package: Path) -> Path:
    """models/{a,b,tampered,link->../outside} and an outside/ package beside models/."""
    models = tmp_path / "models"
    make_package(models / "a", manifest_only_package, "pkg-a")
    make_package(models / "b", manifest_only_package, "pkg-b")
    make_package(models / "tampered", manifest_only_package, "pkg-t")
    (models / "tampered" / "notes.txt").write_text("changed after hashing\n")
    make_package(tmp_path / "outside", manifest_only_package, "pkg-out")
    (models / "link").symlink_to(tmp_path / "outside", target_is_directory=True)
    return models


def running(root: Path, **settings):
    return running_app(root / "a", "fake", api_key=KEY, **settings)


async def test_reload_switches_package(root: Path) -> None:
    async with running(root) as (client, _app):
        before = (await client.get("/v1/model", headers=AUTH)).json()["name"]
        r = await client.post("/admin/reload", json={"model_dir": "b"}, headers=AUTH)
        info = (await client.get("/v1/model", headers=AUTH)).json()
        answer = (await client.post("/classify", json={"text": "weather"}, headers=AUTH)).json()
        metrics = (await client.get("/metrics")).text
        back = await client.post("/admin/reload", json={"model_dir": str(root / "a")}, headers=AUTH)
        again = await client.post("/admin/reload", headers=AUTH)  # no body: re-read the package being served
    assert before == "pkg-a"
    assert r.status_code == 200, r.text
    assert r.json()["previous"] == "pkg-a"
    assert r.json()["model"]["name"] == "pkg-b"
    assert info["name"] == "pkg-b"
    assert answer["model"] == "pkg-b"
    assert answer["intent"] == "weather"
    assert 'intent_model_info{backend="fake",model="pkg-b",precision="none"} 1.0' in metrics
    assert 'model="pkg-a"' not in metrics
    assert back.json()["model"]["name"] == "pkg-a"
    assert again.status_code == 200
    assert again.json()["previous"] == again.json()["model"]["name"] == "pkg-a"


async def test_requests_in_flight_during_a_reload_are_answered(root: Path) -> None:
    async with running(root) as (client, app):
        old = app.state.classifier
        old.backend.gate.clear()  # a request is held inside the old model
        base = len(old.backend.calls)
        held = asyncio.create_task(client.post("/classify", json={"text": "weather"}, headers=AUTH))
        deadline = time.monotonic() + 10
        while len(old.backend.calls) == base:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        reloading = asyncio.create_task(client.post("/admin/reload", json={"model_dir": "b"}, headers=AUTH))
        while app.state.classifier is old:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        # Swapped while the old model still works: new requests go to the new package at once.
        during = await client.post("/classify", json={"text": "weather"}, headers=AUTH)
        assert not reloading.done()  # the reload waits for the old runtime to drain
        old.backend.gate.set()
        held_response, reload_response = await asyncio.gather(held, reloading)
    assert during.status_code == 200
    assert during.json()["model"] == "pkg-b"
    assert held_response.status_code == 200
    assert held_response.json()["model"] == "pkg-a"  # finished by the runtime that accepted it
    assert reload_response.status_code == 200


@pytest.mark.parametrize(
    ("target", "status", "code", "message"),
    [
        ("tampered", 409, "package_refused", "sha256 mismatch for"),
        ("missing", 409, "package_refused", "model package directory not found"),
        (".", 409, "package_refused", "manifest.json is missing"),
        ("a\x00b", 422, "invalid_request", "model_dir: control character U+0000 at position 1"),
        (
            "a\ud800",
            422,
            "invalid_request",
            "model_dir: Input should be a valid string, unable to parse raw data as a unicode string",
        ),
        ("a" * 5000, 422, "invalid_request", "model_dir: String should have at most 4096 characters"),
        ("", 422, "invalid_request", "model_dir: String should have at least 1 character"),
        ("n" * 300, 409, "package_refused", "file name too long"),  # a component over the file system's limit
        ("../outside", 403, "path_forbidden", "is outside the model root"),
        ("link", 403, "path_forbidden", "is outside the model root"),  # a symlink out of the root
        ("OUTSIDE_ABSOLUTE", 403, "path_forbidden", "is outside the model root"),
        ("/etc", 403, "path_forbidden", "is outside the model root"),
    ],
)
async def test_bad_reload_is_refused_and_old_package_keeps_serving(
    root: Path, target: str, status: int, code: str, message: str
) -> None:
    if target == "OUTSIDE_ABSOLUTE":
        target = str(root.parent / "outside")
    async with running(root) as (client, app):
        old = app.state.classifier
        body = json.dumps({"model_dir": target})  # ASCII: a lone surrogate goes as its \\u escape
        r = await client.post("/admin/reload", content=body, headers={**AUTH, "content-type": "application/json"})
        answer = await client.post("/classify", json={"text": "weather"}, headers=AUTH)
        info = (await client.get("/v1/model", headers=AUTH)).json()
        assert app.state.classifier is old
        assert not old.batcher.closing
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert message in r.json()["error"]["message"]
    assert answer.status_code == 200
    assert answer.json()["model"] == "pkg-a"
    assert info["name"] == "pkg-a"


async def test_one_reload_at_a_time(root: Path) -> None:
    async with running(root) as (client, app), app.state.reload_lock:
        r = await client.post("/admin/reload", json={"model_dir": "b"}, headers=AUTH)
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "reload_in_progress"


async def test_reload_needs_the_key(root: Path) -> None:
    async with running(root) as (client, app):
        r = await client.post("/admin/reload", json={"model_dir": "b"}, headers={"authorization": "Bearer no"})
        assert app.state.classifier.manifest.name == "pkg-a"
    assert r.status_code == 401


def test_startup_refuses_a_package_outside_the_root(root: Path) -> None:
    settings = Settings(model_dir=root / "a", backend="fake", model_root=root.parent / "outside")
    with pytest.raises(PackagePathError, match="is outside the model root"):
        IntentClassifier.load(settings, Metrics())
    linked = Settings(model_dir=root / "link", backend="fake")  # default root: models/, but the link leaves it
    with pytest.raises(PackagePathError):
        IntentClassifier.load(linked, Metrics())


def list_outside(pkg: Path, name: str, target: Path) -> None:
    """List `name` in the package's files, with the target's true sha256 when it exists."""
    manifest = read_manifest(pkg)
    manifest.files[name] = sha256_file(target) if target.is_file() else "0" * 64
    (pkg / "manifest.json").write_text(manifest.model_dump_json())


@pytest.mark.parametrize("kind", ["name", "link"])
async def test_reload_refuses_files_outside_the_package_alike_whether_they_exist(root: Path, kind: str) -> None:
    secret = root.parent / "secret.txt"  # outside the package, inside the model root's parent
    secret.write_text("not for the service\n")
    answers = []
    for target in (secret, root.parent / "absent.txt"):
        pkg = make_package(root / f"{kind}-{target.stem}", root / "a", "pkg-x")
        if kind == "name":
            list_outside(pkg, f"../../{target.name}", target)
        else:
            (pkg / "notes.txt").unlink()
            (pkg / "notes.txt").symlink_to(target)
        async with running(root) as (client, app):
            r = await client.post("/admin/reload", json={"model_dir": pkg.name}, headers=AUTH)
            assert app.state.classifier.manifest.name == "pkg-a"  # the old package keeps serving
        assert r.status_code == 409, r.text
        assert r.json()["error"]["code"] == "package_refused"
        answers.append(r.json()["error"]["message"].replace(pkg.name, "PKG"))
    expected = {
        "name": "files: '../../secret.txt' is not a file name of the package folder",
        "link": "package file 'notes.txt' is a link that leads outside the package folder",
    }[kind]
    assert expected in answers[0]
    assert answers[0] == answers[1].replace("absent", "secret")  # nothing tells the two apart
