"""Backends agree with each other; the ONNX path needs no torch; tokenization pads to the longest text."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

from app.backends.base import REGISTRY, backend_class, load_backend
from app.package import BACKEND_FILES, PackageError
from tests.conftest import synthetic_split

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return synthetic_split(300, seed=7)[0]


def logits(package: Path, name: str, texts: list[str]) -> np.ndarray:
    backend = load_backend(name, package)
    return np.concatenate([backend.infer(backend.tokenize(texts[i : i + 32])) for i in range(0, len(texts), 32)])


def test_torch_and_onnx_logits_match(tiny_package: Path, texts: list[str]) -> None:
    torch_logits = logits(tiny_package, "torch", texts)
    onnx_logits = logits(tiny_package, "onnx", texts)
    assert np.abs(torch_logits - onnx_logits).max() < 1e-4


@pytest.mark.parametrize(("fp32", "int8"), [("torch", "torch-int8"), ("onnx", "onnx-int8")])
def test_int8_agrees_with_fp32(tiny_package: Path, texts: list[str], fp32: str, int8: str) -> None:
    a = logits(tiny_package, fp32, texts).argmax(-1)
    b = logits(tiny_package, int8, texts).argmax(-1)
    assert (a == b).mean() >= 0.95
    assert not np.array_equal(logits(tiny_package, fp32, texts[:8]), logits(tiny_package, int8, texts[:8]))


def test_padding_only_to_longest_and_truncation(tiny_package: Path) -> None:
    backend = load_backend("onnx", tiny_package)
    batch = backend.tokenize(["timer", "set a timer for me now please"])
    assert batch.input_ids.shape == (2, 9)  # [CLS] + 7 words + [SEP]
    assert batch.attention_mask[0].tolist() == [1, 1, 1] + [0] * 6
    long = backend.tokenize(["timer " * 100])
    assert long.input_ids.shape == (1, 32)  # manifest max_length


def test_padding_does_not_change_predictions(tiny_package: Path) -> None:
    backend = load_backend("onnx", tiny_package)
    alone = backend.predict(["set a timer"])
    padded = backend.predict(["set a timer", "please can you translate this to spanish for me now"])[:1]
    np.testing.assert_allclose(alone, padded, atol=1e-5)


def test_similar_lengths_are_grouped(tiny_package: Path) -> None:
    backend = load_backend("onnx", tiny_package)
    short = ["timer", "balance", "sunny", "money"]
    long = ["please can you set a timer for me now", "what is the weather for me now please"]
    texts = [short[0], long[0], short[1], short[2], long[1], short[3]]
    groups = backend.encoder.grouped(texts)
    assert [sorted(rows) for rows, _ in groups] == [[0, 2, 3, 5], [1, 4]]
    assert [batch.input_ids.shape[1] for _, batch in groups] == [3, 11]
    one_batch = backend.postprocess(backend.infer(backend.tokenize(texts)))
    np.testing.assert_allclose(backend.predict(texts), one_batch, atol=1e-5)  # same answers, less padding


def test_unknown_backend_name() -> None:
    with pytest.raises(PackageError, match="unknown backend 'gpu'"):
        backend_class("gpu")


def test_onnx_backend_runs_without_torch(tiny_package: Path) -> None:
    # Block torch and transformers imports entirely, then serve a request through the real app.
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'transformers', 'optimum'):
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from fastapi.testclient import TestClient
from app.core.config import Settings
from app.main import create_app
for backend in ('onnx', 'onnx-int8'):
    with TestClient(create_app(Settings(model_dir={str(tiny_package)!r}, backend=backend))) as c:
        r = c.post('/classify', json={{'text': 'transfer money'}})
        assert r.status_code == 200 and r.json()['intent'] == 'transfer', r.text
assert not any(m.split('.')[0] in ('torch', 'transformers') for m in sys.modules)
print('ok')
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


def test_torch_backend_without_torch_is_a_clear_error(tiny_package: Path) -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'torch':
            raise ModuleNotFoundError('blocked', name='torch')
sys.meta_path.insert(0, Block())
from app.backends.base import backend_class
from app.package import PackageError
try:
    backend_class('torch')
except PackageError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert "needs a missing dependency (torch)" in proc.stdout, proc.stderr
    assert "pip install -e .[torch]" in proc.stdout


def test_every_backend_declares_weights_and_an_extra_that_exists() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(pyproject["project"]["optional-dependencies"])
    for name, spec in REGISTRY.items():
        cls = backend_class(name)
        assert cls.name == name
        assert cls.spec() is spec
        assert spec.extra is None or spec.extra in extras, (name, spec.extra)
        if name != "fake":
            assert set(spec.weights) <= cls.required_files()
    assert BACKEND_FILES == {
        "torch": "model.safetensors",
        "torch-int8": "model.safetensors",
        "onnx": "model.onnx",
        "onnx-int8": "model_quantized.onnx",
    }


def test_onnx_backend_without_onnxruntime_names_the_core_install() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'onnxruntime':
            raise ModuleNotFoundError('blocked', name='onnxruntime')
sys.meta_path.insert(0, Block())
from app.backends.base import backend_class
from app.package import PackageError
try:
    backend_class('onnx-int8')
except PackageError as exc:
    print(exc)
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == (
        "backend 'onnx-int8' needs a missing dependency (onnxruntime); install it with `pip install -e .`"
    ), proc.stderr


def test_torch_int8_scales_each_output_channel(package_copy: Path, texts: list[str]) -> None:
    """A weight row far larger than the others (fine-tuned encoders such as all-mpnet-base-v2 have such channels)
    must not cost the other rows their precision: torch-int8 uses one scale per output channel, so the logits of
    the other classes stay several times closer to fp32 than with one scale for the whole tensor."""
    import torch
    from safetensors.torch import load_file, save_file
    from torch.ao.quantization import quantize_dynamic

    from app.package import update_manifest

    weights_file = package_copy / "model.safetensors"
    state = load_file(weights_file)
    state["classifier.weight"][0] *= 500.0  # one outlier row: class 0's logit
    save_file(state, weights_file, metadata={"format": "pt"})
    update_manifest(package_copy)  # fresh sha256 of the changed file

    fp32 = load_backend("torch", package_copy)
    batch = fp32.tokenize(texts[:64])
    reference = fp32.infer(batch)[:, 1:]
    per_tensor = quantize_dynamic(fp32.model, {torch.nn.Linear}, dtype=torch.qint8)  # the scheme to beat
    fp32.model = per_tensor
    per_tensor_error = np.abs(fp32.infer(batch)[:, 1:] - reference).mean()
    int8_error = np.abs(load_backend("torch-int8", package_copy).infer(batch)[:, 1:] - reference).mean()
    assert int8_error < 0.25 * per_tensor_error, (int8_error, per_tensor_error)
