"""scripts/remote/weights.py: the fp16 + changed-rows packs that bring GPU-trained weights back rebuild them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "remote"))

import weights  # noqa: E402

EMB = "bert.embeddings.word_embeddings.weight"


def tiny_state(seed: int) -> dict:
    """A BERT-shaped state dict: word embeddings plus one dense layer."""
    g = torch.Generator().manual_seed(seed)
    return {EMB: torch.randn(50, 8, generator=g), "bert.encoder.dense.weight": torch.randn(8, 8, generator=g)}


def test_pack_keeps_only_changed_embedding_rows_and_unpack_rebuilds_them() -> None:
    reference = tiny_state(0)
    trained = {k: v.clone() for k, v in reference.items()}
    trained[EMB][[3, 7, 41]] += 0.5
    trained["bert.encoder.dense.weight"] *= 2
    packed = weights.pack(trained, reference)
    assert packed[EMB + weights.ROWS].tolist() == [3, 7, 41]
    assert packed[EMB + weights.VALUES].dtype == torch.float16
    rebuilt = weights.unpack(packed, reference)
    # Unchanged rows come back bit-exact from the reference; changed ones within fp16 rounding.
    untouched = [i for i in range(50) if i not in (3, 7, 41)]
    assert torch.equal(rebuilt[EMB][untouched], reference[EMB][untouched])
    torch.testing.assert_close(rebuilt[EMB], trained[EMB], atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(
        rebuilt["bert.encoder.dense.weight"], trained["bert.encoder.dense.weight"], atol=5e-3, rtol=1e-3
    )
    assert rebuilt[EMB].dtype == torch.float32


def test_pack_by_token_ids_without_reference_fills_other_rows_with_zeros() -> None:
    state = tiny_state(1)
    rebuilt = weights.unpack(weights.pack(state, token_ids=[0, 5, 5, 9]))
    assert rebuilt[EMB].abs().sum(dim=1).nonzero().flatten().tolist() == [0, 5, 9]
    torch.testing.assert_close(rebuilt[EMB][[0, 5, 9]], state[EMB][[0, 5, 9]], atol=2e-3, rtol=1e-3)


def test_bare_encoder_reference_matches_classifier_names() -> None:
    reference = {"embeddings.word_embeddings.weight": tiny_state(2)[EMB]}
    trained = {EMB: reference["embeddings.word_embeddings.weight"].clone()}
    trained[EMB][4] = 1.0
    packed = weights.pack(trained, reference)
    assert packed[EMB + weights.ROWS].tolist() == [4]
    assert torch.equal(weights.unpack(packed, reference)[EMB][0], reference["embeddings.word_embeddings.weight"][0])


def test_adam_without_weight_decay_leaves_unseen_embedding_rows_bit_identical() -> None:
    """Why the packs are small: rows of tokens absent from training never move (they would with decay)."""
    for decay, expect_identical in ((0.0, True), (0.01, False)):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(20, 4)
        head = torch.nn.Linear(4, 2)
        before = emb.weight.detach().clone()
        opt = torch.optim.AdamW([*emb.parameters(), *head.parameters()], lr=1e-2, weight_decay=decay)
        for _ in range(5):
            loss = torch.nn.functional.cross_entropy(head(emb(torch.tensor([1, 2, 3]))), torch.tensor([0, 1, 0]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        unseen = list(range(4, 20))
        assert torch.equal(emb.weight[unseen], before[unseen]) is expect_identical
        assert not torch.equal(emb.weight[[1, 2, 3]], before[[1, 2, 3]])
