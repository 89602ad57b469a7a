"""int8 weights on x86 CPUs without VNNI: the onnx-int8 backend has ORT compute them exactly, as uint8."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import app.cpu
from app.backends.base import load_backend
from app.backends.onnx import OnnxInt8Backend
from app.package import read_manifest
from tests.app.test_cpu import AVX2, VNNI

TEXTS = ["what is my balance", "transfer money to my savings", "is it going to rain", "hello there", "blorp zzz"]


def without_vnni(monkeypatch: pytest.MonkeyPatch, flags: frozenset[str] = AVX2) -> None:
    """Make app.cpu see an x86 CPU with `flags`."""
    monkeypatch.setattr(app.cpu, "cpu_flags", lambda: flags)
    monkeypatch.setattr(app.cpu.platform, "machine", lambda: "x86_64")


def matmul_integer(weight: np.ndarray, zero: int) -> onnx.ModelProto:
    """uint8 activations times a constant int8 weight with a constant zero point: int32 products."""
    node = helper.make_node("MatMulInteger", ["a", "w", "a_zero", "w_zero"], ["y"])
    inits = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(np.array(0, np.uint8), "a_zero"),
        numpy_helper.from_array(np.array(zero, np.int8), "w_zero"),
    ]
    graph = helper.make_graph(
        [node],
        "mm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, weight.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, None)],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("zero", [0, 3])
def test_the_backends_int8_options_give_exact_products_where_int8_kernels_saturate(
    tiny_package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zero: int
) -> None:
    """Activations of 255 against weights of -128 overflow a 16-bit pair sum (2 x 255 x -128 < -32768), which a
    CPU without VNNI saturates; the backend's session options give exact integer math on every x86 CPU."""
    rng = np.random.default_rng(0)
    weight = rng.integers(-128, 128, size=(64, 16)).astype(np.int8)
    weight[:, 0] = -128
    a = rng.integers(0, 256, size=(8, 64)).astype(np.uint8)
    a[0] = 255
    path = tmp_path / "mm.onnx"
    onnx.save(matmul_integer(weight, zero), path)
    without_vnni(monkeypatch)
    options = OnnxInt8Backend(tiny_package, read_manifest(tiny_package), num_threads=1).session_options()
    (got,) = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"]).run(None, {"a": a})
    np.testing.assert_array_equal(got, a.astype(np.int64) @ (weight.astype(np.int64) - zero))


@pytest.mark.parametrize(
    ("flags", "exact_int8", "exact_path", "warned"),
    [(AVX2, True, True, False), (AVX2, False, False, True), (VNNI, True, False, False), (VNNI, False, False, False)],
)
def test_the_int8_backend_takes_the_exact_path_only_where_int8_kernels_saturate(
    tiny_package: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    flags: frozenset[str],
    exact_int8: bool,
    exact_path: bool,
    warned: bool,
) -> None:
    without_vnni(monkeypatch, flags)
    with caplog.at_level(logging.INFO, logger="app"):
        backend = load_backend("onnx-int8", tiny_package, num_threads=1, exact_int8=exact_int8)
    assert ("computes int8 weights exactly as uint8" in caplog.text) == exact_path, caplog.text
    assert ("INTENT_EXACT_INT8 is false" in caplog.text) == warned, caplog.text
    logits = backend.infer(backend.tokenize(TEXTS))
    fp32 = load_backend("onnx", tiny_package, num_threads=1)
    reference = fp32.infer(fp32.tokenize(TEXTS))
    if exact_path:  # on every CPU; the int8 weights' own kernels on a CPU without VNNI were 1.22 away
        assert np.abs(logits - reference).max() < 0.25
    assert (logits.argmax(1) == reference.argmax(1)).all()


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_exact_int8_setting_reaches_the_served_backend(
    tiny_package: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.app.conftest import running_app

    without_vnni(monkeypatch)
    monkeypatch.setenv("INTENT_EXACT_INT8", "false")
    with caplog.at_level(logging.INFO, logger="app"):
        async with running_app(tiny_package, "onnx-int8") as (client, _):
            assert (await client.post("/classify", json={"text": "what is my balance"})).status_code == 200
    assert "INTENT_EXACT_INT8 is false" in caplog.text
