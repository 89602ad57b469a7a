"""Pruning of a classifier package: magnitude (Zhu & Gupta 2017), movement (Sanh et al. 2020) and structured.

Unstructured methods (`masks`) mask the encoder's Linear weights (attention query/key/value/output and FFN
intermediate/output; never embeddings, pooler or classifier) with a per-matrix top-k mask, so every matrix
ends at the same sparsity, raised along the cubic schedule of Zhu & Gupta (`schedule`) during fine-tuning; the
saved model is a plain BertForSequenceClassification whose pruned weights are exact zeros.

Structured pruning (`structured`) removes whole attention heads and FFN neurons, ranked by first-order
(mask-gradient) importance, and rebuilds smaller dense Linear layers. Loading it needs transformers 4.x (the
pinned 4.57 applies `pruned_heads` at load; 5.x dropped head pruning), which is what export and serving use.

Recovery training (`train`) is the HF Trainer path of fine-tuning and distillation, with the pruner stepped by
a callback; it runs on CUDA when available. `sizes` measures what pruning saves; `pipeline` ties it together.
The masks and the structured surgery use no transformers API that 5.x removed, so pruning can run on a machine
with 5.x (`--no-finish`) and be finished here.
"""

from compression.config import PruneConfig
from compression.prune.masks import (
    ENCODER_LINEAR,
    MagnitudeMask,
    MovementMask,
    TopKBinarizer,
    UnstructuredPruner,
    encoder_linears,
    topk_mask,
)
from compression.prune.pipeline import keep_source_tokenizer, load_model, prune
from compression.prune.schedule import Schedule, cubic_sparsity
from compression.prune.sizes import (
    compressed_sizes,
    csr_bytes,
    gzip_size,
    package_weight_stats,
    record_compressed_sizes,
    weight_stats,
)
from compression.prune.structured import importance_scores, make_loss, prune_ffn_, prune_heads_, structured_prune_
from compression.prune.train import PruningCallback, PruningTrainer, collator, fit, steps_for

__all__ = [
    "ENCODER_LINEAR",
    "MagnitudeMask",
    "MovementMask",
    "PruneConfig",
    "PruningCallback",
    "PruningTrainer",
    "Schedule",
    "TopKBinarizer",
    "UnstructuredPruner",
    "collator",
    "compressed_sizes",
    "csr_bytes",
    "cubic_sparsity",
    "encoder_linears",
    "fit",
    "gzip_size",
    "importance_scores",
    "keep_source_tokenizer",
    "load_model",
    "make_loss",
    "package_weight_stats",
    "prune",
    "prune_ffn_",
    "prune_heads_",
    "record_compressed_sizes",
    "steps_for",
    "structured_prune_",
    "topk_mask",
    "weight_stats",
]
