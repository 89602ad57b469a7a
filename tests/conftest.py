"""Session fixtures: a tiny real BERT classifier, trained for a few steps and packaged with the real code."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

LABELS = ["balance", "oos", "transfer", "weather", "timer", "translate"]
DOMAINS = {"banking": ["balance", "transfer"], "utility": ["timer", "weather"], "travel": ["translate"]}
KEYWORDS = {
    "balance": ["balance", "much", "account"],
    "transfer": ["transfer", "send", "money"],
    "weather": ["weather", "rain", "sunny"],
    "timer": ["timer", "minutes", "alarm"],
    "translate": ["translate", "spanish", "say"],
    "oos": ["dow", "stock", "movie"],
}
FILLER = ["please", "can", "you", "the", "my", "to", "for", "me", "what", "is", "a", "now", "how", "do", "i"]
VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    *sorted({w for ws in KEYWORDS.values() for w in ws} | set(FILLER)),
]


def synthetic_split(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Texts made of one label keyword among filler words, with their labels."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        label = LABELS[i % len(LABELS)]
        words = [*rng.sample(FILLER, 3), rng.choice(KEYWORDS[label])]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def write_clinc_json(path: Path, n_train: int = 240, n_val: int = 60, n_test: int = 60) -> Path:
    """A small file with the oos-eval CLINC150 layout (lists of [text, label])."""
    data = {}
    for key, n, seed in (("train", n_train, 1), ("val", n_val, 2), ("test", n_test, 3)):
        texts, labels = synthetic_split(n, seed)
        rows = [[t, lab] for t, lab in zip(texts, labels, strict=True)]
        data[key] = [r for r in rows if r[1] != "oos"]
        data[f"oos_{key}"] = [r for r in rows if r[1] == "oos"]
    path.write_text(json.dumps(data))
    (path.parent / "domains.json").write_text(json.dumps(DOMAINS))
    return path


def build_tiny_model(work: Path):
    """A 2-layer, hidden-32 BERT classifier with a WordPiece vocab written here, briefly trained."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    vocab = work / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(
        vocab_size=len(VOCAB),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    model = BertForSequenceClassification(config)
    return train_briefly(model, tokenizer)


def train_briefly(model, tokenizer):
    """A few full-batch steps on the synthetic split: enough for separated, meaningful logits."""
    import torch

    texts, labels = synthetic_split(240, seed=1)
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    y = torch.tensor([LABELS.index(label) for label in labels])
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    model.train()
    for _ in range(60):
        loss = model(**enc, labels=y).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full model package (safetensors, ONNX, ONNX int8, manifest) built by the real compression code."""

    work = tmp_path_factory.mktemp("tiny")
    return package_tiny(*build_tiny_model(work), work / "package", "tiny-bert")


def package_tiny(model, tokenizer, package: Path, name: str) -> Path:
    """Save, export and quantize a tiny model with the real compression code."""
    from compression.export import ExportConfig, export
    from compression.packaging import save_torch_package
    from compression.quantize import QuantizeConfig, quantize

    save_torch_package(
        model,
        tokenizer,
        package,
        name=name,
        labels=LABELS,
        domains=DOMAINS,
        max_length=32,
        source={"base_model": name, "dataset": "synthetic"},
        oos_threshold=0.3,
    )
    export(ExportConfig(package))
    # int8 weights, as the shipped package has: a CPU without VNNI then serves them shifted to uint8.
    quantize(QuantizeConfig(package, preset="avx512_vnni"))
    return package


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT saved like an HF hub checkpoint (encoder + tokenizer), to fine-tune from."""
    work = tmp_path_factory.mktemp("base")
    model, tokenizer = build_tiny_model(work)
    base = work / "base"
    model.bert.save_pretrained(base)  # encoder only, as a base model is published
    tokenizer.save_pretrained(base)
    return base


@pytest.fixture
def package_copy(tiny_package: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny package that a test may damage."""
    dst = tmp_path / "package"
    shutil.copytree(tiny_package, dst)
    return dst


@pytest.fixture(scope="session")
def clinc_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic CLINC150-format data file (with domains.json beside it)."""
    return write_clinc_json(tmp_path_factory.mktemp("data") / "data_oos_plus.json")


MPNET_SPECIALS = ["<s>", "<pad>", "</s>", "[UNK]", "<mask>"]


def build_tiny_mpnet(work: Path):
    """A 2-layer, hidden-32 MPNet classifier (no token types, <s>/</s> specials, relative positions), trained briefly."""
    import torch
    from transformers import MPNetConfig, MPNetForSequenceClassification, MPNetTokenizerFast

    torch.manual_seed(0)
    vocab = work / "mpnet-vocab.txt"
    vocab.write_text("\n".join([*MPNET_SPECIALS, *VOCAB[5:]]) + "\n")
    tokenizer = MPNetTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = MPNetConfig(
        vocab_size=len(MPNET_SPECIALS) + len(VOCAB) - 5,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=66,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=len(LABELS),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    return train_briefly(MPNetForSequenceClassification(config), tokenizer)


@pytest.fixture(scope="session")
def tiny_mpnet_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MPNet model package (safetensors, ONNX, ONNX int8, manifest) built by the real compression code."""

    work = tmp_path_factory.mktemp("tiny-mpnet")
    return package_tiny(*build_tiny_mpnet(work), work / "package", "tiny-mpnet")
