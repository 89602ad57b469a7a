"""Infinity (infinity-emb) as a peer server for scripts/bench_serving.py: its virtualenv, model folder and command.

Infinity serves the same package weights as our service (the ONNX graph of one backend) through its optimum
(ONNX Runtime) engine on CPU, in a virtualenv of its own (its pins clash with ours: numpy<2, uvicorn 0.32).

    python scripts/peer_infinity.py --package artifacts/student --backend onnx-int8 --port 8400

Start it from the benchmark with `ensure_venv`, `prepare_folder` and `command`; send `request_body(...)` to
`CLASSIFY_PATH` once `READY_PATH` answers 200. Infinity answers every label of the config's id2label with its
softmax probability, best first: `{"data": [[{"label": ..., "score": ...}, ...]], ...}` (about 8.5 kB for 151
labels), and applies no out-of-scope threshold. It does not truncate (our service cuts texts to the manifest's
max_length): one text over 512 tokens stops its inference thread, and that request and every later one hang
while READY_PATH still answers 200. Benchmark queries are far shorter.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.package import BACKEND_FILES as PACKAGE_FILES  # noqa: E402

logger = logging.getLogger(__name__)

INFINITY_VERSION = "0.0.78"
DEFAULT_CACHE = Path.home() / ".cache" / "intentserve" / "peers" / "infinity"
MARKER = ".intentserve-installed"
# The CPU build of torch (as in the Dockerfile): PyPI's plain `torch` is the multi-GB CUDA build. pip's own
# configuration (find-links, extra indexes) still applies, so a local wheel of the same version serves too.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
TORCH = "torch==2.13.0+cpu"
# infinity-emb[server,optimum] and everything it pulls in, resolved together with the CPU torch and frozen.
PINNED = (
    f"infinity-emb[server,optimum]=={INFINITY_VERSION}",
    TORCH,
    "annotated-doc==0.0.7",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "backoff==2.2.1",
    "certifi==2026.10.19.post1",
    "charset-normalizer==3.5.3",
    "click==8.1.8",
    "distro==1.9.0",
    "fastapi==0.165.0",
    "filelock==4.3.1",
    "flatbuffers==25.12.19",
    "fsspec==2026.9.0",
    "h11==0.16.0",
    "hf-xet==1.8.0",
    "httptools==0.9.0",
    "huggingface-hub==0.36.2",
    "idna==3.20",
    "jinja2==3.1.6",
    "markdown-it-py==4.3.0",
    "markupsafe==3.0.4",
    "mdurl==0.1.2",
    "ml-dtypes==0.5.4",
    "mpmath==1.3.0",
    "networkx==3.6.1",
    "numpy==1.26.4",
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "opentelemetry-api==1.45.2",
    "optimum==2.1.0",
    "optimum-onnx==0.1.0",
    "orjson==3.13.0",
    "packaging==26.4",
    "posthog==7.91.1",
    "prometheus-client==0.26.0",
    "prometheus-fastapi-instrumentator==8.1.0",
    "protobuf==7.36.2",
    "pydantic==2.14.4",
    "pydantic-core==2.50.5",
    "pygments==2.21.0",
    "python-dotenv==1.2.4",
    "pyyaml==6.0.4",
    "regex==2026.11.19",
    "requests==2.34.2",
    "rich==13.9.4",
    "safetensors==0.8.0",
    "setuptools==84.0.0",  # torch 2.13 requires setuptools>=77
    "shellingham==1.5.4",
    "starlette==1.10.0",
    "sympy==1.14.0",
    "tokenizers==0.22.2",
    "tqdm==4.70.1",
    "transformers==4.57.6",
    "typer==0.12.5",
    "typing-extensions==4.16.0",
    "typing-inspection==0.4.5",
    "urllib3==2.8.0",
    "uvicorn==0.32.1",
    "uvloop==0.23.0",
    "watchfiles==1.3.0",
    "websockets==17.4",
)

# Backend -> the ONNX file of our package it serves (docs/package-format.md); the torch backends have none.
BACKEND_FILES = {name: file for name, file in PACKAGE_FILES.items() if file.endswith(".onnx")}  # infinity: ONNX only
REQUIRED_FILES = ("config.json", "tokenizer.json")
# transformers' AutoTokenizer reads these when present (special tokens, lower-casing, the slow vocabulary).
OPTIONAL_FILES = ("tokenizer_config.json", "special_tokens_map.json", "vocab.txt")

READY_PATH = "/health"  # answers 200 only once the model is loaded (infinity loads it before listening)
CLASSIFY_PATH = "/classify"
BATCH_SIZE = 32  # infinity's default, and our service's INTENT_MAX_BATCH_SIZE default

# Run infinity's CLI with every ONNX Runtime session pinned to N intra-op threads. Infinity passes no session
# options to optimum, so ORT takes one thread per core whatever OMP_NUM_THREADS says (ORT's own thread pool);
# this gives it the same thread budget as our service's INTENT_NUM_THREADS. argv: -c CODE N v2 ...
_LAUNCHER = """\
import sys
threads = int(sys.argv.pop(1))
if threads > 0:
    import onnxruntime
    _init = onnxruntime.InferenceSession.__init__
    def _pinned(self, path_or_bytes, sess_options=None, *args, **kwargs):
        sess_options = sess_options or onnxruntime.SessionOptions()
        if not sess_options.intra_op_num_threads:
            sess_options.intra_op_num_threads = threads
            sess_options.inter_op_num_threads = 1
        print(f"onnxruntime: {sess_options.intra_op_num_threads} intra-op thread(s)", file=sys.stderr, flush=True)
        _init(self, path_or_bytes, sess_options, *args, **kwargs)
    onnxruntime.InferenceSession.__init__ = _pinned
from infinity_emb.cli import cli
sys.argv[0] = "infinity_emb"
sys.exit(cli())
"""


class PeerError(RuntimeError):
    """The infinity peer cannot be installed, or a package cannot be served by it."""


def venv_python(venv: Path) -> Path:
    """The interpreter of a virtualenv."""
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _pip(python: Path, args: list[str], step: str, log_path: Path) -> None:
    """Run one pip step in the venv; a failure becomes one PeerError naming the step and pip's last lines."""
    argv = [str(python), "-m", "pip", "install", "--disable-pip-version-check", *args]
    with log_path.open("a", encoding="utf-8") as log:
        log.write(f"$ {' '.join(argv)}\n")
        log.flush()
        proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
        tail = "\n".join(line for line in lines[-15:] if "is ignored: it is neither" not in line)
        raise PeerError(
            f"installing infinity-emb {INFINITY_VERSION}: {step} failed (pip exit {proc.returncode}); "
            f"full log {log_path}; last lines:\n{tail}"
        )


def ensure_venv(cache_dir: Path = DEFAULT_CACHE, torch_index: str = TORCH_CPU_INDEX) -> Path:
    """Create (once) the virtualenv with the pinned infinity-emb set under cache_dir; return its python."""
    cache_dir = Path(cache_dir).expanduser()
    venv = cache_dir / "venv"
    python = venv_python(venv)
    marker = venv / MARKER
    wanted = "\n".join(PINNED) + "\n"
    if marker.is_file() and python.exists() and marker.read_text(encoding="utf-8") == wanted:
        return python
    if venv.exists():  # an interrupted or older install: start clean rather than patch it
        logger.info("removing incomplete or outdated %s", venv)
        shutil.rmtree(venv)
    cache_dir.mkdir(parents=True, exist_ok=True)
    log_path = cache_dir / "install.log"
    log_path.write_text("", encoding="utf-8")
    logger.info("creating %s for infinity-emb %s (a few minutes, once)", venv, INFINITY_VERSION)
    proc = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise PeerError(f"creating the virtualenv {venv} failed: {(proc.stderr or proc.stdout).strip()[-500:]}")
    # torch first, alone from the CPU index: the pinned set then finds it installed and pulls no CUDA wheels.
    # Its dependencies are in the pinned set (from the ordinary index).
    _pip(python, ["--no-deps", "--index-url", torch_index, TORCH], f"{TORCH} from {torch_index}", log_path)
    requirements = cache_dir / "requirements.txt"
    requirements.write_text(wanted, encoding="utf-8")
    _pip(python, ["-r", str(requirements)], f"the pinned set ({requirements})", log_path)
    marker.write_text(wanted, encoding="utf-8")  # last: its presence means the venv is complete
    logger.info("infinity-emb %s installed in %s", INFINITY_VERSION, venv)
    return python


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PeerError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise PeerError(f"{path} is not a JSON object")
    return data


def prepare_folder(package: Path, backend: str, dest: Path) -> Path:
    """Link into dest what infinity reads of our package for `backend`: one ONNX file, config and tokenizer."""
    package = Path(package).resolve()
    dest = Path(dest)
    if backend not in BACKEND_FILES:
        raise PeerError(f"infinity serves ONNX only: backend {backend!r} is not one of {sorted(BACKEND_FILES)}")
    manifest = _read_json(package / "manifest.json")
    if backend not in manifest.get("backends", []):
        raise PeerError(f"backend {backend!r} is not in package {package} (it has {manifest.get('backends')})")
    weights = BACKEND_FILES[backend]
    for name in (*REQUIRED_FILES, weights):
        if not (package / name).is_file():
            raise PeerError(f"{package / name} is missing; infinity needs it for backend {backend!r}")
    config = _read_json(package / "config.json")
    # Infinity offers /classify only for a *ForSequenceClassification architecture.
    if not any("SequenceClassification" in arch for arch in config.get("architectures") or []):
        raise PeerError(f"{package / 'config.json'}: architectures {config.get('architectures')} is not a classifier")
    # Infinity names the answers from config.json's id2label: they must be the manifest's labels, in order.
    id2label = config.get("id2label") or {}
    labels = [id2label.get(str(i)) for i in range(len(id2label))]
    if labels != manifest.get("labels"):
        raise PeerError(f"{package / 'config.json'}: id2label does not match the manifest's labels")
    dest.mkdir(parents=True, exist_ok=True)
    # Infinity picks among every *.onnx under the folder (preferring "quantize" names on CPU): keep exactly one.
    for stale in dest.rglob("*.onnx"):
        if not stale.is_symlink() and stale.name != weights:
            raise PeerError(f"{dest} holds another ONNX file, {stale.name}; use an empty folder")
        stale.unlink()
    for name in (*REQUIRED_FILES, *OPTIONAL_FILES, weights):
        source, target = package / name, dest / name
        if target.is_symlink() or target.exists():
            target.unlink()
        if not source.is_file():
            continue
        try:
            target.symlink_to(source)
        except OSError:  # no symlinks on this filesystem
            shutil.copy2(source, target)
    return dest


def command(
    python: Path, folder: Path, port: int, threads: int, *, batch_size: int = BATCH_SIZE, served_name: str = "intent"
) -> tuple[list[str], dict[str, str], Path]:
    """argv, environment and working folder that start infinity serving `folder` on 127.0.0.1:port.

    threads: ONNX Runtime intra-op threads (and torch/tokenizer threads); 0 keeps the libraries' defaults.
    """
    # `--model-id .` from inside the folder: with any other path infinity hands optimum the ONNX file's path
    # joined to the folder a second time. Warm-up off: its text is over 512 tokens and infinity's classification
    # pipeline does not truncate, so BERT's position table fails and startup aborts. Graph optimization off:
    # infinity's call fails on optimum 2.x's OptimizationConfig (it would log that and load the graph as is),
    # and our package's graph is already ORT-optimized at export.
    argv = [
        str(python),
        "-c",
        _LAUNCHER,
        str(threads),
        "v2",
        "--model-id",
        ".",
        "--served-model-name",
        served_name,
        "--engine",
        "optimum",
        "--device",
        "cpu",
        "--batch-size",
        str(batch_size),
        "--no-model-warmup",
        "--onnx-disable-optimize",
        "--no-vector-disk-cache",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # warning: no access log line per request (our service logs none either)
        "--log-level",
        "warning",
    ]
    # Our venv's settings must not leak into infinity's interpreter. Set empty rather than dropped, so that they
    # also override a caller that merges this environment over its own (CPython treats an empty one as unset).
    env = dict(os.environ)
    env.update(
        {
            "PYTHONPATH": "",
            "PYTHONHOME": "",
            "VIRTUAL_ENV": "",
            "HF_HUB_OFFLINE": "1",  # a local folder: never ask the hub
            "TRANSFORMERS_OFFLINE": "1",
            "DO_NOT_TRACK": "1",  # infinity's anonymous usage statistics
            "INFINITY_ANONYMOUS_USAGE_STATS": "0",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if threads > 0:
        env.update({name: str(threads) for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS")})
    return argv, env, Path(folder)


def request_body(text: str, model_id: str = "intent") -> dict[str, Any]:
    """Infinity's /classify request for one text (its ClassifyInput schema)."""
    return {"input": [text], "model": model_id}


def main(argv: list[str] | None = None) -> int:
    """Install if needed, prepare the folder and run infinity in the foreground until interrupted."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--package", type=Path, required=True, help="one of our model packages")
    p.add_argument("--backend", choices=sorted(BACKEND_FILES), default="onnx-int8")
    p.add_argument("--port", type=int, default=7997)
    p.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads; 0 = one per core")
    p.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        name = str(_read_json(Path(args.package) / "manifest.json").get("name") or Path(args.package).name)
        python = ensure_venv(args.cache_dir)
        folder = prepare_folder(args.package, args.backend, args.cache_dir / "models" / f"{name}-{args.backend}")
    except PeerError as exc:
        logger.error("%s", exc)
        return 1
    cmd, env, cwd = command(python, folder, args.port, args.threads, batch_size=args.batch_size, served_name=name)
    logger.info("infinity on http://127.0.0.1:%d%s (model %r), folder %s", args.port, CLASSIFY_PATH, name, folder)
    # Become the server: Ctrl+C and SIGTERM reach infinity itself, with no parent left behind.
    os.chdir(cwd)
    os.execve(cmd[0], cmd, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
