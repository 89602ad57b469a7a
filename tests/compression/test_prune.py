"""Pruning: cubic schedule, top-k masks, masks under Adam, movement gradients, structured shapes, CLI packages."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from app.backends.base import load_backend
from app.package import read_manifest
from compression.benchmark import BenchmarkConfig, run_benchmark
from compression.cli import main
from compression.data import Split, load_clinc
from compression.finetune import EncodedSplit
from compression.prune import (
    MovementMask,
    PruneConfig,
    Schedule,
    UnstructuredPruner,
    collator,
    csr_bytes,
    cubic_sparsity,
    encoder_linears,
    fit,
    gzip_size,
    importance_scores,
    make_loss,
    package_weight_stats,
    structured_prune_,
    topk_mask,
    weight_stats,
)
from tests.conftest import LABELS, build_tiny_model, synthetic_split

TEXTS = ["set a timer for ten minutes", "what is my balance", "translate this to spanish", "is it sunny now"]
PRUNED_LINEARS = 2 * 6  # tiny model: 2 layers x (query, key, value, attention output, intermediate, output)


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, object]:
    """The tiny trained classifier of conftest, built once (no ONNX export: these tests need torch only)."""
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture
def tiny(tiny_base: tuple) -> tuple[torch.nn.Module, object]:
    """A fresh copy of the tiny classifier (eval mode) and its tokenizer."""
    model, tokenizer = tiny_base
    return copy.deepcopy(model).eval(), tokenizer


def batch(tokenizer: object, texts: list[str] = TEXTS) -> dict[str, torch.Tensor]:
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))


def labels_for(texts: list[str]) -> torch.Tensor:
    return torch.tensor([LABELS.index(x) for x in ("timer", "balance", "translate", "weather")][: len(texts)])


# ----------------------------------------------------------------------------------------- schedule / masks


def test_cubic_schedule_hits_endpoints_and_is_monotone() -> None:
    s_i, s_f, t0, n, dt = 0.1, 0.9, 20, 8, 5
    values = [cubic_sparsity(t, s_i, s_f, t0, n, dt) for t in range(100)]
    assert values[0] == values[t0 - 1] == values[t0] == s_i
    assert values[t0 + n * dt] == pytest.approx(s_f)
    assert values[-1] == pytest.approx(s_f)
    assert values[t0 + n * dt - 1] < s_f
    assert all(a <= b for a, b in itertools.pairwise(values))
    # Held between updates, and the formula at an update step.
    assert values[t0 + 2 * dt] == values[t0 + 2 * dt + dt - 1]
    assert values[t0 + 2 * dt] == pytest.approx(s_f + (s_i - s_f) * (1 - 2 / n) ** 3)


@pytest.mark.parametrize("total", [5, 15, 4800])
def test_schedule_over_a_run_reaches_the_target_in_time(total: int) -> None:
    cfg = PruneConfig(sparsity=0.9, prune_start=0.1, prune_end=0.7, prune_every=10)
    schedule = Schedule.over(cfg, total)
    assert schedule(schedule.start_step) == 0.0
    assert schedule.end_step <= max(schedule.start_step + 1, int(0.7 * total))
    assert schedule.end_step <= total - 1  # the last step trains at the final sparsity
    assert schedule(schedule.end_step) == pytest.approx(0.9)
    assert schedule.n_updates >= 1


@pytest.mark.parametrize("shape", [(7, 5), (64, 32), (33,)])
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.7, 0.9, 0.99])
def test_topk_mask_has_the_requested_sparsity(shape: tuple[int, ...], sparsity: float) -> None:
    scores = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    mask = topk_mask(scores, sparsity)
    dropped = int((~mask).sum())
    assert abs(dropped - sparsity * scores.numel()) <= 1
    if 0 < dropped < scores.numel():
        assert scores[mask].min() > scores[~mask].max()  # keeps the highest scores
    ties = topk_mask(torch.zeros(shape), sparsity)  # all equal: the count still holds
    assert abs(int((~ties).sum()) - sparsity * scores.numel()) <= 1


def test_magnitude_masks_scope_and_largest_weights(tiny: tuple) -> None:
    model, _ = tiny
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruner = UnstructuredPruner(model, "magnitude")
    assert len(pruner.layers) == PRUNED_LINEARS
    pruner.set_sparsity(0.7)
    pruner.finalize()
    after = model.state_dict()
    assert set(after) == set(before)  # a plain model again: no parametrization keys
    for key, value in after.items():
        if any(key == f"{name}.weight" for name, _ in encoder_linears(model)):
            zero = value == 0
            assert abs(int(zero.sum()) - 0.7 * value.numel()) <= 1, key
            assert before[key][~zero].abs().min() >= before[key][zero].abs().max(), key
        else:
            assert torch.equal(value, before[key]), key  # embeddings, biases, pooler, classifier untouched
    assert weight_stats(after)["sparsity"] == pytest.approx(0.7, abs=1e-3)


# ------------------------------------------------------------------------------------ training under masks


def _train_set(tokenizer: object, n: int = 64) -> EncodedSplit:
    texts, labels = synthetic_split(n, seed=7)
    return EncodedSplit(Split(texts, labels), tokenizer, {x: i for i, x in enumerate(LABELS)}, 32)


def _train_with_late_pruning(model: torch.nn.Module, tokenizer: object) -> UnstructuredPruner:
    """4 dense Adam steps (momentum builds up), then 50% magnitude pruning for 8 more steps."""
    cfg = PruneConfig(epochs=3.0, batch_size=16, learning_rate=1e-2, weight_decay=0.01, warmup_ratio=0.0)
    pruner = UnstructuredPruner(model, "magnitude", Schedule(0.0, 0.5, start_step=4, n_updates=1, every=1))
    fit(model, _train_set(tokenizer), collator(tokenizer), cfg, "cpu", pruner)
    return pruner


def _pruned_positions(pruner: UnstructuredPruner) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(mask.mask.clone(), weight.detach()) for mask, weight in pruner._masks()]


def test_pruned_weights_stay_zero_after_adam_steps(tiny: tuple) -> None:
    model, tokenizer = tiny
    start = copy.deepcopy(model.state_dict())
    pruner = _train_with_late_pruning(model, tokenizer)
    masks = _pruned_positions(pruner)
    for mask, weight in masks:
        assert abs(int((~mask).sum()) - 0.5 * mask.numel()) <= 1
        assert torch.all(weight[~mask] == 0)  # the stored weights, not only the masked forward
        assert torch.any(weight[mask] != 0)
    pruner.finalize()
    for (mask, _), (name, linear) in zip(masks, encoder_linears(model), strict=True):
        assert torch.all(linear.weight[~mask] == 0), name
        assert not torch.equal(linear.weight, start[f"{name}.weight"] * mask)  # training went on after pruning


def test_without_remasking_adam_revives_pruned_weights(tiny: tuple, monkeypatch: pytest.MonkeyPatch) -> None:
    # The control for the test above: the re-masking after each optimizer step is what keeps them at zero.
    model, tokenizer = tiny
    monkeypatch.setattr(UnstructuredPruner, "after_step", lambda self: None)
    masks = _pruned_positions(_train_with_late_pruning(model, tokenizer))
    assert any(torch.any(weight[~mask] != 0) for mask, weight in masks)


def test_movement_scores_get_straight_through_gradients(tiny: tuple) -> None:
    model, tokenizer = tiny
    pruner = UnstructuredPruner(model, "movement")
    pruner.set_sparsity(0.5)
    loss = torch.nn.functional.cross_entropy(model(**batch(tokenizer)).logits, labels_for(TEXTS))
    loss.backward()
    scores = pruner.scores()
    assert len(scores) == PRUNED_LINEARS
    for (mask_module, weight), s in zip(pruner._masks(), scores, strict=True):
        assert isinstance(mask_module, MovementMask)
        assert s.grad is not None
        dropped = ~topk_mask(s, 0.5)
        assert dropped.any()
        # Straight-through: masked-out weights still tell their score which way they would move.
        assert (s.grad[dropped] != 0).float().mean() > 0.9
        assert weight.grad is not None
    # Scores set by hand decide the mask: the kept weights are exactly those with the top scores.
    linear = pruner.layers[0][1]
    with torch.no_grad():
        scores[0].copy_(torch.arange(scores[0].numel(), dtype=torch.float32).view_as(scores[0]))
    kept = linear.weight != 0
    assert torch.equal(kept, topk_mask(scores[0], 0.5) & (linear.parametrizations.weight.original != 0))
    pruner.finalize()
    assert not any("scores" in k or "parametrizations" in k for k in model.state_dict())


# ----------------------------------------------------------------------------------------------- structured


def test_structured_pruning_equals_masking_and_shrinks_saved_shapes(tiny: tuple, tmp_path: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    model, tokenizer = tiny
    enc = batch(tokenizer)
    head_imp = torch.tensor([[1.0, 0.5], [0.2, 0.9]])  # keeps head 0 of layer 0, head 1 of layer 1
    ffn_imp = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for i, layer in enumerate(masked.bert.encoder.layer):
            drop = torch.ones(64, dtype=torch.bool)
            drop[ffn_imp[i].topk(40).indices] = False
            layer.intermediate.dense.weight[drop] = 0  # GELU(0) = 0: the neuron is off
            layer.intermediate.dense.bias[drop] = 0
        expected = masked(**enc, head_mask=torch.tensor([[1.0, 0.0], [0.0, 1.0]])).logits
    plan = structured_prune_(model, head_imp, ffn_imp, heads=1, ffn=40)
    assert plan["pruned_heads"] == {"0": [1], "1": [0]}
    with torch.no_grad():
        got = model(**enc).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert not torch.allclose(got, masked(**enc).logits, atol=1e-3)  # the head mask mattered

    model.save_pretrained(tmp_path)
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    layer = reloaded.bert.encoder.layer[0]
    assert layer.attention.self.query.weight.shape == (16, 32)  # 1 head of size 16 instead of 2
    assert layer.attention.output.dense.weight.shape == (32, 16)
    assert layer.intermediate.dense.weight.shape == (40, 32)
    assert layer.output.dense.weight.shape == (32, 40)
    assert reloaded.config.pruned_heads == {0: [1], 1: [0]}
    with torch.no_grad():
        assert torch.allclose(reloaded(**enc).logits, got, atol=1e-6)


def test_head_importance_is_the_head_mask_gradient(tiny: tuple) -> None:
    model, tokenizer = tiny
    enc = batch(tokenizer)
    y = labels_for(TEXTS)
    head_mask = torch.ones(2, 2, requires_grad=True)
    (grad,) = torch.autograd.grad(model(**enc, head_mask=head_mask, labels=y).loss, head_mask)
    cfg = PruneConfig()
    heads, neurons = importance_scores(model, [{**enc, "labels": y}], make_loss(cfg, False), "cpu")
    assert torch.allclose(heads, grad.abs(), atol=1e-6)
    assert neurons.shape == (2, 64)
    assert (neurons >= 0).all()
    assert neurons.sum() > 0


# ------------------------------------------------------------------------------------------ sizes / stats


def test_size_helpers(tmp_path: Path) -> None:
    state = {
        "bert.encoder.layer.0.attention.self.query.weight": torch.tensor([[0.0, 1.0], [0.0, 0.0]]),
        "bert.encoder.layer.0.attention.self.query.bias": torch.tensor([0.0, 2.0]),
        "classifier.weight": torch.zeros(3, 2),
    }
    stats = weight_stats(state)
    assert stats == {
        "encoder_linear_params": 4,
        "encoder_linear_nonzero": 1,
        "sparsity": 0.75,
        "total_params": 12,
        "total_nonzero": 2,
    }
    assert csr_bytes(state) == 1 * 8 + 3 * 4 + (2 + 6) * 4  # CSR query weight + dense bias and classifier
    zeros, noise = tmp_path / "zeros.bin", tmp_path / "noise.bin"
    zeros.write_bytes(bytes(100_000))
    noise.write_bytes(np.random.default_rng(0).bytes(100_000))
    assert gzip_size(zeros) < 1_000 < 100_000 < gzip_size(noise)


# ----------------------------------------------------------------------------------------------------- CLI


METHOD_ARGS = {
    "magnitude": ["--sparsity", "0.9"],
    "movement": ["--sparsity", "0.9", "--scores-lr", "0.05"],
    "structured": ["--heads-per-layer", "1", "--ffn-keep", "32", "--importance-examples", "64"],
}


@pytest.fixture(scope="module")
def pruned(tiny_package: Path, clinc_json: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One package per method, written by the CLI (1 epoch, KD from the tiny package itself), finished."""
    out = tmp_path_factory.mktemp("pruned")
    packages = {}
    for method, extra in METHOD_ARGS.items():
        argv = ["--data", str(clinc_json), "prune", "--model", str(tiny_package), "--method", method, *extra]
        argv += ["--distill-from", str(tiny_package), "--epochs", "1", "--batch-size", "16", "--lr", "1e-3"]
        argv += ["--output-dir", str(out / method), "--num-threads", "1", "--logits-cache", str(out / "cache")]
        assert main(argv) == 0
        packages[method] = out / method
    assert len(list((out / "cache").glob("*.safetensors"))) == 1  # one teacher pass for the three runs
    return packages


@pytest.mark.parametrize("method", ["magnitude", "movement"])
def test_cli_unstructured_package(pruned: dict[str, Path], tiny_package: Path, method: str) -> None:
    package = pruned[method]
    manifest = read_manifest(package)
    info = manifest.source["pruning"]
    assert manifest.source["step"] == "prune"
    assert manifest.backends == ["torch", "torch-int8", "onnx", "onnx-int8"]
    assert set(manifest.metrics) == {"torch", "torch-int8", "onnx", "onnx-int8"}
    assert info["method"] == method
    assert info["target_sparsity"] == 0.9
    assert abs(info["encoder_linear_nonzero"] - 0.1 * info["encoder_linear_params"]) <= PRUNED_LINEARS
    assert info["sparsity"] == pytest.approx(package_weight_stats(package)["sparsity"])  # measured on the file
    assert info["encoder_linear_params"] == info["dense"]["encoder_linear_params"]  # same shapes, zeros inside
    assert info["schedule"]["end_step"] <= info["schedule"]["total_steps"]
    sizes = info["compressed"]
    assert set(sizes) == {"model.safetensors", "model.onnx", "model_quantized.onnx"}
    assert sizes["model.safetensors"]["gzip_bytes"] < 0.6 * sizes["model.safetensors"]["bytes"]
    assert info["csr_bytes"] < sizes["model.safetensors"]["bytes"]
    config = json.loads((package / "config.json").read_text())
    assert config["architectures"] == ["BertForSequenceClassification"]  # plain model: masks baked in
    for name in ("tokenizer.json", "vocab.txt"):  # the source's tokenizer, byte for byte
        assert (package / name).read_bytes() == (tiny_package / name).read_bytes()


def test_cli_structured_package_shrinks_exports_and_serves(pruned: dict[str, Path], tiny_package: Path) -> None:
    package = pruned["structured"]
    manifest = read_manifest(package)
    info = manifest.source["pruning"]
    assert manifest.backends == ["torch", "torch-int8", "onnx", "onnx-int8"]
    assert info["heads_per_layer"] == 1
    assert info["ffn_keep"] == 32
    assert info["importance_examples"] == 64
    # 2 layers x (4 x 32x16 attention + 2 x 32x32 FFN) instead of 2 x (4 x 32x32 + 2 x 32x64).
    assert info["encoder_linear_params"] == 2 * (4 * 32 * 16 + 2 * 32 * 32)
    assert info["dense"]["encoder_linear_params"] == 2 * (4 * 32 * 32 + 2 * 32 * 64)
    assert info["sparsity"] == 0.0
    assert package_weight_stats(package)["encoder_linear_params"] == info["encoder_linear_params"]
    config = json.loads((package / "config.json").read_text())
    assert config["intermediate_size"] == 32
    assert {int(k): len(v) for k, v in config["pruned_heads"].items()} == {0: 1, 1: 1}
    assert (package / "model.safetensors").stat().st_size < (tiny_package / "model.safetensors").stat().st_size

    texts = [*TEXTS, "send money to my account", "how much is in my account", "movie stock dow"]
    torch_probs = load_backend("torch", package).predict(texts)
    onnx_probs = load_backend("onnx", package).predict(texts)
    int8_probs = load_backend("onnx-int8", package).predict(texts)
    assert np.allclose(onnx_probs, torch_probs, atol=1e-4)
    assert (onnx_probs.argmax(1) == torch_probs.argmax(1)).all()
    assert (int8_probs.argmax(1) == torch_probs.argmax(1)).all()


def test_cli_no_finish_then_finish(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    # The GPU-machine workflow: train and save there (no optimum), export/quantize/evaluate here.
    out = tmp_path / "movement"
    argv = ["--data", str(clinc_json), "prune", "--model", str(tiny_package), "--method", "movement"]
    argv += ["--sparsity", "0.5", "--epochs", "1", "--max-train-examples", "32", "--output-dir", str(out)]
    assert main([*argv, "--no-finish"]) == 0
    trained = read_manifest(out)
    assert trained.backends == ["torch", "torch-int8"]
    assert set(trained.source["pruning"]["compressed"]) == {"model.safetensors"}
    assert trained.source["hyperparameters"]["max_train_examples"] == 32
    assert main(["--data", str(clinc_json), "finish", "--package", str(out)]) == 0
    finished = read_manifest(out)
    assert finished.backends == ["torch", "torch-int8", "onnx", "onnx-int8"]
    assert set(finished.source["pruning"]["compressed"]) == {"model.safetensors", "model.onnx", "model_quantized.onnx"}
    assert finished.source["pruning"]["sparsity"] == trained.source["pruning"]["sparsity"]
    with pytest.raises(SystemExit, match="finish: no model package"):
        main(["--data", str(clinc_json), "finish", "--package", str(tmp_path / "none")])


def test_benchmark_reports_sparsity_and_gzip(pruned: dict[str, Path], clinc_json: Path) -> None:
    data = load_clinc(str(clinc_json))
    packages = (pruned["magnitude"], pruned["structured"])
    cfg = BenchmarkConfig(packages=packages, backends=("onnx-int8",), latency_runs=4, warmup_runs=1, num_threads=1)
    rows = {r["package"]: r for r in run_benchmark(cfg, data.test, data.source)["rows"] if not r["timing_only"]}
    sparse, small = rows["magnitude"], rows["structured"]
    assert sparse["sparsity"] == pytest.approx(0.9, abs=1e-2)
    assert small["sparsity"] == 0.0
    assert small["encoder_linear_nonzero"] == small["encoder_linear_params"] < sparse["encoder_linear_params"]
    assert 0 < sparse["gzip_size_mb"] < sparse["size_mb"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--method", "structured"], "needs --heads-per-layer"),
        (["--method", "magnitude", "--ffn-keep", "8"], "structured only"),
        (["--method", "magnitude", "--sparsity", "1.0"], "sparsity"),
        (["--method", "movement", "--prune-start", "0.8", "--prune-end", "0.5"], "prune_start"),
        (["--max-train-examples", "-1"], "--max-train-examples must be at least 1, got -1"),
        (["--method", "structured", "--ffn-keep", "8", "--importance-examples", "0"], "--importance-examples must"),
        (["--num-threads", "-1"], "--num-threads must be at least 0, got -1"),
        (["--seed", "-1"], "--seed must be in [0, 2**32), got -1"),
    ],
)
def test_cli_rejects_bad_arguments(
    tiny_package: Path, clinc_json: Path, extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--data", str(clinc_json), "prune", "--model", str(tiny_package), *extra])
    assert exc.value.code == 2  # a usage error, as for every command
    assert message in capsys.readouterr().err


def test_cli_refuses_an_output_inside_the_package_it_prunes(
    tiny_package: Path, clinc_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in tiny_package.iterdir())
    with pytest.raises(SystemExit, match=f"overlaps {tiny_package}"):
        main(
            ["--data", str(clinc_json), "prune", "--model", str(tiny_package), "--output-dir", str(tiny_package / "p")]
        )
    assert sorted(p.name for p in tiny_package.iterdir()) == before


def test_cli_refuses_missing_packages(tiny_package: Path, clinc_json: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no model package"):
        main(["--data", str(clinc_json), "prune", "--model", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no teacher package"):
        main(["--data", str(clinc_json), "prune", "--model", str(tiny_package), "--distill-from", str(tmp_path)])


def test_prune_runs_share_the_teacher_pass_through_the_logits_cache(
    tiny_package: Path, clinc_json: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import compression.prune.pipeline as prune_module

    calls: list[int] = []
    real = prune_module.teacher_logits
    monkeypatch.setattr(prune_module, "teacher_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    data = load_clinc(str(clinc_json))
    model, tokenizer = prune_module.load_model(tiny_package)

    def train_set(**changes: object) -> torch.Tensor:
        cfg = PruneConfig(model_dir=tiny_package, teacher_dir=tiny_package, output_dir=tmp_path / "out", **changes)
        split = prune_module._train_set(cfg, data, model, tokenizer, 32, "cpu")
        return torch.stack([split[i]["teacher_logits"] for i in range(len(split))])

    reference = train_set()
    cache = tmp_path / "cache"
    assert torch.equal(train_set(logits_cache=cache, sparsity=0.5), reference)
    assert torch.equal(train_set(logits_cache=cache, sparsity=0.9), reference)  # another run of the sweep
    assert len(calls) == 2  # the reference and the first cached run; the second read the cache
    train_set(logits_cache=cache, max_train_examples=20)  # another train set: another entry
    assert len(calls) == 3
    assert len(list(cache.glob("*.safetensors"))) == 2
