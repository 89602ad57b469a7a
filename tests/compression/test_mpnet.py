"""MPNet packages (no token types, <s>/</s> specials, relative positions): export, int8, all four backends, serving."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from app.backends.base import load_backend
from tests.conftest import synthetic_split

TEXTS = synthetic_split(24, seed=7)[0]


def reference_logits(package: Path, texts: list[str]) -> np.ndarray:
    """transformers' own MPNet with its own tokenizer: the ground truth the backends must reproduce."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(package)
    model = AutoModelForSequenceClassification.from_pretrained(package).eval()
    enc = tokenizer(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.inference_mode():
        return model(**enc).logits.numpy()


def test_the_service_tokenizer_matches_the_mpnet_tokenizer(tiny_mpnet_package: Path) -> None:
    from transformers import AutoTokenizer

    from app.tokenizer import TextEncoder

    ours = TextEncoder(tiny_mpnet_package, 32)(TEXTS)
    theirs = AutoTokenizer.from_pretrained(tiny_mpnet_package)(TEXTS, padding=True, return_tensors="np")
    np.testing.assert_array_equal(ours.input_ids, theirs["input_ids"])
    np.testing.assert_array_equal(ours.attention_mask, theirs["attention_mask"])
    encoder = TextEncoder(tiny_mpnet_package, 32)
    assert encoder.pad_id == 1  # MPNet's <pad>, not BERT's [PAD] = 0
    assert (ours.input_ids[:, 0] == 0).all()  # <s> opens every query


def test_exported_graphs_take_no_token_type_ids(tiny_mpnet_package: Path) -> None:
    for name in ("model.onnx", "model_quantized.onnx"):
        graph = onnx.load(tiny_mpnet_package / name).graph
        assert [i.name for i in graph.input] == ["input_ids", "attention_mask"], name
    ops = {n.op_type for n in onnx.load(tiny_mpnet_package / "model_quantized.onnx").graph.node}
    assert ops & {"MatMulInteger", "DynamicQuantizeMatMul", "QAttention"}, "the int8 graph has no int8 kernels"


@pytest.mark.parametrize("backend", ["torch", "torch-int8", "onnx", "onnx-int8"])
def test_every_backend_reproduces_transformers(tiny_mpnet_package: Path, backend: str) -> None:
    runtime = load_backend(backend, tiny_mpnet_package, num_threads=1)
    ours = runtime.infer(runtime.tokenize(TEXTS))
    ref = reference_logits(tiny_mpnet_package, TEXTS)
    if backend in ("torch", "onnx"):
        np.testing.assert_allclose(ours, ref, atol=2e-4)
    else:  # int8: the same decisions on almost every query
        assert (ours.argmax(1) == ref.argmax(1)).mean() >= 0.9
        assert np.abs(ours - ref).max() < 0.5


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_service_answers_with_an_mpnet_package(tiny_mpnet_package: Path) -> None:
    from tests.app.conftest import running_app

    async with running_app(tiny_mpnet_package, "onnx-int8") as (client, _):
        answer = await client.post("/classify", json={"text": "please transfer my money"})
        weather = await client.post("/classify", json={"text": "what is the weather now"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["intent"] == "transfer"
    assert weather.json()["intent"] == "weather"


def test_torch_int8_keeps_the_ffn_down_projection_in_fp32(tiny_mpnet_package: Path) -> None:
    """MPNet's FFN output projections stay fp32 (their inputs carry outlier features); every other Linear is
    quantized with one scale per output channel."""
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    model = load_backend("torch-int8", tiny_mpnet_package).model
    fp32 = sorted(n for n, m in model.named_modules() if type(m) is torch.nn.Linear)
    quantized = {n: m for n, m in model.named_modules() if isinstance(m, DynamicLinear)}
    assert fp32, "the FFN output projections should stay fp32"
    assert all(re.search(r"layer\.\d+\.output\.dense$", n) for n in fp32), fp32
    assert any(n.endswith("intermediate.dense") for n in quantized), sorted(quantized)
    assert all(m.weight().qscheme() == torch.per_channel_affine for m in quantized.values())
