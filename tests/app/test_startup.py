"""`python -m app` refuses a bad package or setting with one clear line and exit code 2."""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.core.config import Settings
from app.metrics import Metrics
from app.package import BACKEND_FILES, PackageError, read_manifest, sha256_file, write_manifest
from app.service import IntentClassifier
from tests.app.test_shutdown import free_port

ROOT = Path(__file__).resolve().parents[2]
PR_CAPBSET_DROP = 24


def start(package: Path, backend: str, preexec_fn=None, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INTENT_")}
    # A free port: the port is checked before the package, so a taken or privileged one would hide its error.
    environ |= {"INTENT_MODEL_DIR": str(package), "INTENT_BACKEND": backend, "INTENT_PORT": str(free_port()), **env}
    return subprocess.run(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec_fn,
    )


def damage_missing_file(pkg: Path) -> None:
    (pkg / "model.onnx").unlink()


def damage_sha(pkg: Path) -> None:
    with (pkg / "model.onnx").open("ab") as fh:
        fh.write(b"\0")


def damage_tokenizer(pkg: Path) -> None:
    (pkg / "tokenizer.json").write_text("{}")


def damage_label_count(pkg: Path) -> None:
    manifest = read_manifest(pkg)
    manifest.labels = [*manifest.labels, "extra_label"]
    write_manifest(pkg, manifest)


def damage_backend_list(pkg: Path) -> None:
    (pkg / "model_quantized.onnx").unlink()
    write_manifest(pkg, read_manifest(pkg))  # re-hash: the package honestly lacks onnx-int8


def damage_manifest_json(pkg: Path) -> None:
    (pkg / "manifest.json").write_text("{not json")


def damage_schema(pkg: Path) -> None:
    data = json.loads((pkg / "manifest.json").read_text())
    data["schema_version"] = 99
    (pkg / "manifest.json").write_text(json.dumps(data))


def damage_manifest_list(pkg: Path) -> None:
    (pkg / "manifest.json").write_text("[]")


def damage_manifest_encoding(pkg: Path) -> None:
    (pkg / "manifest.json").write_bytes(b'{"name": "caf\xe9"}')  # latin-1, not UTF-8


def rehash(pkg: Path) -> None:
    write_manifest(pkg, read_manifest(pkg))  # the damage is then the package's own content, not tampering


def damage_tokenizer_garbage(pkg: Path) -> None:
    (pkg / "tokenizer.json").write_text('{"model": "garbage"}')
    rehash(pkg)


def damage_tokenizer_pad(pkg: Path) -> None:
    text = (pkg / "tokenizer.json").read_text()
    (pkg / "tokenizer.json").write_text(text.replace('"[PAD]"', '"[NOTPAD]"'))
    rehash(pkg)


def damage_tokenizer_config(pkg: Path) -> None:
    (pkg / "tokenizer_config.json").write_text("{oops")
    rehash(pkg)


@pytest.mark.parametrize(
    ("damage", "backend", "message"),
    [
        (damage_missing_file, "onnx", "package file missing:"),
        (damage_manifest_list, "onnx", "manifest.json is not a JSON object (found list)"),
        (damage_manifest_encoding, "onnx", "manifest.json is not UTF-8 text (byte 13)"),
        (damage_tokenizer_garbage, "onnx", "tokenizer.json is not a tokenizer the `tokenizers` library can load"),
        (damage_tokenizer_pad, "onnx-int8", "pad token '[PAD]' is not in"),
        (damage_tokenizer_config, "onnx", "tokenizer_config.json is not valid JSON"),
        (damage_sha, "onnx", "sha256 mismatch for"),
        (damage_tokenizer, "onnx", "sha256 mismatch for"),
        (damage_label_count, "onnx", "model outputs 6 logits but the manifest lists 7 labels"),
        (damage_backend_list, "onnx-int8", "backend 'onnx-int8' is not in package"),
        (damage_manifest_json, "onnx", "is not valid JSON"),
        (damage_schema, "onnx", "schema_version 99 is not supported"),
        (None, "tensorrt", "unknown backend 'tensorrt'"),
    ],
)
def test_bad_package_exits_with_one_clear_line(package_copy: Path, damage, backend: str, message: str) -> None:
    if damage is not None:
        damage(package_copy)
    proc = start(package_copy, backend)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("intentserve: error: ")
    assert message in lines[0]


def damage_threshold_scale(pkg: Path) -> None:
    data = json.loads((pkg / "manifest.json").read_text())
    data["oos_threshold"] = 2.5  # a logit-scale threshold left on a probability score
    (pkg / "manifest.json").write_text(json.dumps(data))


def test_threshold_outside_its_score_range_is_refused(package_copy: Path, tiny_package: Path) -> None:
    damage_threshold_scale(package_copy)
    proc = start(package_copy, "onnx")
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith(
        "fields: oos threshold 2.5 is outside [0, 1], the range of the 'msp' score (a probability)"
    )
    proc = start(tiny_package, "onnx", INTENT_OOS_THRESHOLD="1.5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "intentserve: error: INTENT_OOS_THRESHOLD does not fit package 'tiny-bert': oos threshold 1.5 is outside "
        "[0, 1], the range of the 'msp' score (a probability)"
    )


def test_logit_score_threshold_override_loads(package_copy: Path) -> None:
    manifest = read_manifest(package_copy)
    manifest.oos_score, manifest.oos_threshold = "energy", 1.75
    write_manifest(package_copy, manifest)
    settings = Settings(model_dir=package_copy, backend="onnx", oos_threshold=-2.5)
    IntentClassifier.check(settings)
    classifier = IntentClassifier.load(settings, Metrics())
    assert (classifier.oos_score, classifier.threshold) == ("energy", -2.5)


def test_missing_package_dir(tmp_path: Path) -> None:
    proc = start(tmp_path / "nowhere", "onnx")
    assert proc.returncode == 2
    assert "model package directory not found" in proc.stderr


def test_invalid_setting(tiny_package: Path) -> None:
    proc = start(tiny_package, "onnx", INTENT_MAX_BATCH_SIZE="zero")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("intentserve: error: invalid setting INTENT_MAX_BATCH_SIZE")


def test_inconsistent_settings(tiny_package: Path) -> None:
    proc = start(tiny_package, "onnx", INTENT_MAX_QUEUE="4", INTENT_MAX_BATCH_TEXTS="8")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "intentserve: error: invalid settings: INTENT_MAX_QUEUE (4) must be >= INTENT_MAX_BATCH_TEXTS (8)"
    )


def test_package_outside_the_model_root(tiny_package: Path, tmp_path: Path) -> None:
    proc = start(tiny_package, "onnx", INTENT_MODEL_ROOT=str(tmp_path))
    assert proc.returncode == 2
    assert "is outside the model root" in proc.stderr


def test_good_package_loads_in_process(tiny_package: Path) -> None:
    classifier = IntentClassifier.load(Settings(model_dir=tiny_package, backend="onnx-int8"), Metrics())
    assert classifier.backend.name == "onnx-int8"


def test_tampered_package_never_loads_in_process(package_copy: Path) -> None:
    damage_sha(package_copy)
    with pytest.raises(PackageError, match="sha256 mismatch"):
        IntentClassifier.load(Settings(model_dir=package_copy, backend="onnx"), Metrics())


def test_relative_model_dir_is_relative_to_the_working_directory(
    tiny_package: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tiny_package.parent.parent)
    relative = Path(tiny_package.parent.name) / tiny_package.name
    classifier = IntentClassifier.load(Settings(model_dir=relative, backend="onnx"), Metrics())
    assert classifier.backend.package_dir == tiny_package.resolve()


def drop_file_read_override() -> None:
    """In the child, before exec: root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH obeys file modes."""
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_unreadable_file_is_named_with_the_reason(package_copy: Path, backend: str) -> None:
    weights = package_copy / BACKEND_FILES[backend]
    weights.chmod(0)
    proc = start(package_copy, backend, preexec_fn=drop_file_read_override if os.geteuid() == 0 else None)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == f"intentserve: error: cannot read model file {weights}: permission denied"


def test_files_the_backend_never_reads_are_not_hashed(package_copy: Path) -> None:
    with (package_copy / "model.safetensors").open("ab") as fh:
        fh.write(b"\0")  # corrupt torch weights: nothing to the onnx backends, refused by the torch ones
    for backend in ("onnx", "onnx-int8"):
        classifier = IntentClassifier.load(Settings(model_dir=package_copy, backend=backend), Metrics())
        assert classifier.backend.name == backend
    with pytest.raises(PackageError, match=r"sha256 mismatch for .*model\.safetensors"):
        IntentClassifier.check(Settings(model_dir=package_copy, backend="torch"))
    (package_copy / "tokenizer_config.json").write_text("{}")  # read by every tokenizer: always verified
    with pytest.raises(PackageError, match=r"sha256 mismatch for .*tokenizer_config\.json"):
        IntentClassifier.check(Settings(model_dir=package_copy, backend="onnx"))


def test_package_files_get_their_mode_from_the_umask(tiny_package: Path, tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        (tmp_path / "private.bin").write_bytes(b"x")
        (tmp_path / "private.bin").chmod(0o600)  # as safetensors writes its file
        write_manifest(tmp_path, read_manifest(tiny_package))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "private.bin").stat().st_mode) == 0o640
    # The fixture's package was written by the real save/export/quantize steps under the session's umask.
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tiny_package.iterdir()}
    assert modes == dict.fromkeys(modes, 0o666 & ~old)
    assert "model.safetensors" in modes


def test_an_interrupted_manifest_write_leaves_the_old_manifest(
    package_copy: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (package_copy / "manifest.json").read_bytes()
    real = Path.write_text

    def full_disk(path: Path, text: str, *args: object, **kwargs: object) -> int:
        real(path, text[: len(text) // 2])  # half written, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    manifest = read_manifest(package_copy)
    manifest.name = "renamed"
    with pytest.raises(OSError, match="No space left"):
        write_manifest(package_copy, manifest)
    monkeypatch.undo()
    assert (package_copy / "manifest.json").read_bytes() == before
    assert sorted(p.name for p in package_copy.iterdir() if p.name.startswith(".")) == []  # nothing left behind
    IntentClassifier.check(Settings(model_dir=package_copy, backend="onnx-int8"))  # still whole


def list_outside_file(pkg: Path, name: str, target: Path) -> None:
    """Add `name` to the manifest's files, with the target's true sha256 when it exists."""
    data = json.loads((pkg / "manifest.json").read_text())
    data["files"][name] = sha256_file(target) if target.is_file() else "0" * 64
    (pkg / "manifest.json").write_text(json.dumps(data))


@pytest.mark.parametrize("target", ["/etc/passwd", "/etc/no-such-file"])
def test_manifest_cannot_name_a_file_outside_the_package(package_copy: Path, target: str) -> None:
    name = "../../../../../.." + target
    list_outside_file(package_copy, name, Path(target))
    proc = start(package_copy, "onnx")
    assert proc.returncode == 2, proc.stderr
    # The same line whether the file exists (right hash) or not: nothing learnt about the machine.
    assert proc.stderr.strip() == (
        f"intentserve: error: {package_copy.resolve() / 'manifest.json'}: files: {name!r} "
        "is not a file name of the package folder"
    )


@pytest.mark.parametrize("exists", [True, False])
def test_weights_linked_out_of_the_package_are_refused(package_copy: Path, tmp_path: Path, exists: bool) -> None:
    outside = tmp_path / "outside" / "model.onnx"
    outside.parent.mkdir()
    (package_copy / "model.onnx").rename(outside)  # the very file, with its right hash
    if not exists:
        outside.unlink()
    (package_copy / "model.onnx").symlink_to(outside)
    proc = start(package_copy, "onnx", INTENT_MODEL_ROOT=str(tmp_path))  # the link stays inside the model root
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == (
        "intentserve: error: package file 'model.onnx' is a link that leads outside the package folder "
        f"{package_copy.resolve()}"
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"INTENT_LOG_LEVEL": "trace"}, "invalid setting INTENT_LOG_LEVEL: Input should be 'debug', 'info'"),
        ({"INTENT_HOST": "999.1.1.1"}, "cannot listen on 999.1.1.1:"),
        # A misspelt key would leave the API open: refused, with the setting meant.
        ({"INTENT_APIKEY": "s3cret"}, "unknown setting INTENT_APIKEY (did you mean INTENT_API_KEY?);"),
        ({"intent_max_que": "8"}, "unknown setting intent_max_que (did you mean INTENT_MAX_QUEUE?)"),
    ],
)
def test_a_bad_setting_exits_with_one_line_before_the_model_loads(tiny_package: Path, env: dict, message: str) -> None:
    proc = start(tiny_package, "onnx", **env)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert message in lines[0]
    assert "ready" not in proc.stderr


@pytest.mark.parametrize(
    ("env", "level", "message"),
    [
        ({}, "INFO", "no INTENT_API_KEY: classify and model endpoints are open"),
        ({"INTENT_API_KEY": "  "}, "WARNING", "INTENT_API_KEY is set but blank: it counts as no key"),
        ({"INTENT_HOST": "0.0.0.0"}, "WARNING", "no INTENT_API_KEY and INTENT_HOST 0.0.0.0 is not loopback"),
        ({"INTENT_HOST": "::1"}, "INFO", "no INTENT_API_KEY: classify"),
        ({"INTENT_PUBLISH_PORT": "9000"}, "INFO", "no INTENT_API_KEY: classify"),  # compose's, on the host
    ],
)
def test_an_open_api_is_a_warning_unless_it_listens_on_loopback_only(
    tiny_package: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    env: dict,
    level: str,
    message: str,
) -> None:
    from app.main import create_app

    for name in [n for n in os.environ if n.upper().startswith("INTENT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = Settings(model_dir=tiny_package, backend="onnx")
    app = create_app(settings)

    async def start_and_stop() -> None:
        async with app.router.lifespan_context(app):
            pass

    with caplog.at_level("INFO", logger="app"):
        asyncio.run(start_and_stop())
    said = [(r.levelname, r.getMessage()) for r in caplog.records if "INTENT_API_KEY" in r.getMessage()]
    assert len(said) == 1, said
    assert said[0][0] == level
    assert said[0][1].startswith(message)
    assert not [r for r in caplog.records if "is not a setting" in r.getMessage()]


def test_the_log_level_is_read_in_any_case(tiny_package: Path) -> None:
    assert Settings(model_dir=tiny_package, log_level="WARNING").log_level == "warning"
