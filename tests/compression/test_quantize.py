"""Quantization: the 4-bit word-embedding option is the real table, block-quantized, and still serves."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from app.backends.base import load_backend
from app.package import read_manifest
from compression.cli import main
from compression.data import load_clinc
from compression.quantize import QuantizeConfig, quantize, word_embedding_gather
from tests.conftest import VOCAB


def test_embedding_table_is_block_quantized_to_4_bits(
    package_copy: Path, clinc_json: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from safetensors.numpy import load_file

    int8_size = (package_copy / "model_quantized.onnx").stat().st_size
    with caplog.at_level(logging.WARNING):
        quantize(QuantizeConfig(package_copy, embedding_bits=4, embedding_block_size=16))
    path = package_copy / "model_quantized.onnx"
    model = onnx.load(path)
    # Upgraded by ONNX's converter to what INT4 needs and checked, not renumbered by the quantizer with a warning.
    assert next(o.version for o in model.opset_import if o.domain == "") == 21
    assert model.ir_version >= 10
    onnx.checker.check_model(model)
    assert not [r for r in caplog.records if r.name.startswith("onnxruntime")], caplog.text
    nodes = [n for n in model.graph.node if n.op_type == "GatherBlockQuantized"]
    assert len(nodes) == 1
    inits = {i.name: i for i in model.graph.initializer}
    table, scales = inits[nodes[0].input[0]], numpy_helper.to_array(inits[nodes[0].input[2]])
    assert table.data_type == onnx.TensorProto.INT4
    weights = load_file(package_copy / "model.safetensors")["bert.embeddings.word_embeddings.weight"]
    assert tuple(table.dims) == weights.shape == (len(VOCAB), 32)
    # Dequantized by hand: every value within half a quantization step of the fp32 table.
    # ORT's symmetric scale maps the block's largest |w| to -8 (the scale may be negative), so +max clips at 7:
    # rounding error is at most half a step, except at that clipped end, where it is at most one step.
    step = np.abs(np.repeat(scales, 16, axis=1))
    dequant = numpy_helper.to_array(table).astype(np.float32) * np.repeat(scales, 16, axis=1)
    err = np.abs(dequant - weights)
    assert np.all(err <= step + 1e-6)
    assert np.mean(err <= step / 2 + 1e-6) > 0.9
    assert np.abs(dequant - weights).max() > 0  # really 4-bit, not a copy
    assert "MatMulInteger" in {n.op_type for n in model.graph.node}  # the rest stays int8
    assert path.stat().st_size < int8_size
    assert read_manifest(package_copy).source["quantization"]["embedding_bits"] == 4
    # It serves, and agrees with the fp32 graph on the test split.
    test = load_clinc(str(clinc_json)).test
    fp32 = load_backend("onnx", package_copy).predict_logits(test.texts)
    int4 = load_backend("onnx-int8", package_copy).predict_logits(test.texts)
    assert np.mean(fp32.argmax(1) == int4.argmax(1)) >= 0.95


def test_bad_settings_are_refused(tiny_package: Path) -> None:
    with pytest.raises(ValueError, match="embedding_bits"):
        QuantizeConfig(tiny_package, embedding_bits=2)
    with pytest.raises(ValueError, match="power of two"):
        QuantizeConfig(tiny_package, embedding_bits=4, embedding_block_size=24)
    with pytest.raises(ValueError, match="one Gather over a 7-row table"):
        word_embedding_gather(onnx.load(tiny_package / "model.onnx"), vocab_size=7)
    with pytest.raises(SystemExit) as err:
        main(["quantize", "--package", str(tiny_package), "--embedding-bits", "2"])
    assert err.value.code == 2


def _weight_scale_shapes(path: Path) -> set[tuple[int, ...]]:
    """Shapes of the constant scales of the int8 MatMul weights (per-tensor: scalars; per-channel: vectors)."""
    model = onnx.load(path)
    inits = {i.name: i for i in model.graph.initializer}
    weights = [n.input[1] for n in model.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
    assert weights
    return {tuple(inits[f"{w.removesuffix('_quantized')}_scale"].dims) for w in weights}


def test_per_channel_is_the_default_and_per_tensor_stays_available(package_copy: Path, clinc_json: Path) -> None:
    path = package_copy / "model_quantized.onnx"
    quantize(QuantizeConfig(package_copy))
    per_channel = _weight_scale_shapes(path)
    assert all(len(shape) == 1 and shape[0] > 1 for shape in per_channel)  # one scale per output column
    assert read_manifest(package_copy).source["quantization"]["per_channel"] is True
    test = load_clinc(str(clinc_json)).test
    fp32 = load_backend("onnx", package_copy).predict_logits(test.texts)
    int8 = load_backend("onnx-int8", package_copy).predict_logits(test.texts)
    assert np.mean(fp32.argmax(1) == int8.argmax(1)) >= 0.95

    assert main(["quantize", "--package", str(package_copy), "--no-per-channel"]) == 0
    assert _weight_scale_shapes(path) == {()}  # one scalar scale per matrix
    assert read_manifest(package_copy).source["quantization"]["per_channel"] is False


def _op_types(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(path).graph.node}


def test_fused_graph_is_the_default_and_plain_stays_available(package_copy: Path, clinc_json: Path) -> None:
    path = package_copy / "model_quantized.onnx"
    assert "Attention" in _op_types(package_copy / "model.onnx")  # the fp32 graph ORT fused at export
    quantize(QuantizeConfig(package_copy))
    fused = _op_types(path)
    # The int8 graph keeps the fusions: attention runs as one QAttention node, layer norms fused with the skip.
    assert {"QAttention", "SkipLayerNormalization", "MatMulInteger"} <= fused
    assert read_manifest(package_copy).source["quantization"]["graph"] == "fused"
    test = load_clinc(str(clinc_json)).test
    fp32 = load_backend("onnx", package_copy).predict_logits(test.texts)
    int8 = load_backend("onnx-int8", package_copy).predict_logits(test.texts)
    assert np.mean(fp32.argmax(1) == int8.argmax(1)) >= 0.95
    # Padded batches: a text's logits do not depend on how long its batch mates are (the mask reaches QAttention).
    short, long = test.texts[0], "please " * 12 + test.texts[1]
    alone = load_backend("onnx-int8", package_copy).predict_logits([short])
    padded = load_backend("onnx-int8", package_copy).predict_logits([short, long])[:1]
    assert np.allclose(alone, padded, atol=0.05)

    assert main(["quantize", "--package", str(package_copy), "--quant-graph", "plain"]) == 0
    plain = _op_types(path)
    assert "QAttention" not in plain
    assert "SkipLayerNormalization" not in plain
    assert read_manifest(package_copy).source["quantization"]["graph"] == "plain"


def test_fused_quantization_needs_the_exported_graph(package_copy: Path) -> None:
    (package_copy / "model.onnx").unlink()
    with pytest.raises(FileNotFoundError, match="compression export"):
        quantize(QuantizeConfig(package_copy))
    with pytest.raises(ValueError, match="unknown graph"):
        QuantizeConfig(package_copy, graph="folded")


@pytest.mark.parametrize(
    ("flags", "preset", "weights"), [({"avx2", "avx512_vnni"}, "avx512_vnni", "int8"), ({"avx2"}, "avx2", "uint8")]
)
def test_the_auto_preset_is_the_one_exact_on_the_quantizing_cpu(
    package_copy: Path, monkeypatch: pytest.MonkeyPatch, flags: set[str], preset: str, weights: str
) -> None:
    import app.cpu

    monkeypatch.setattr(app.cpu, "cpu_flags", lambda: frozenset(flags))
    monkeypatch.setattr(app.cpu.platform, "machine", lambda: "x86_64")
    assert QuantizeConfig(package_copy).preset == "auto"
    quantize(QuantizeConfig(package_copy))
    assert read_manifest(package_copy).source["quantization"]["preset"] == preset  # recorded resolved
    model = onnx.load(package_copy / "model_quantized.onnx")
    types = {i.name: onnx.helper.tensor_dtype_to_np_dtype(i.data_type).name for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type in ("MatMulInteger", "QAttention")]
    assert len(matmuls) >= 4
    assert {types[n.input[1]] for n in matmuls} == {weights}  # the weights the preset's kernels need


def test_export_and_quantize_report_each_step_as_it_ends(package_copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="compression"):
        assert main(["export", "--package", str(package_copy)]) == 0
        assert main(["quantize", "--package", str(package_copy), "--embedding-bits", "4"]) == 0
    steps = [r.getMessage().removeprefix(f"{package_copy}: ") for r in caplog.records if "done in" in r.getMessage()]
    names = [s.split(": done in")[0] for s in steps]
    assert names == [
        "export to ONNX",
        "ORT graph optimization (level 2)",
        "the fused fp32 graph to quantize",
        f"ORT dynamic int8 ({read_manifest(package_copy).source['quantization']['preset']})",
        "4-bit word embeddings",
    ]
