"""ONNX Runtime backends (fp32 graph-optimized and dynamic int8): onnxruntime + numpy only."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from app.backends.base import Backend
from app.package import PackageError
from app.tokenizer import Encoded


class OnnxBackend(Backend):
    """model.onnx on the CPU execution provider."""

    name = "onnx"
    precision = "fp32"

    def load(self) -> None:
        """Create the inference session with all graph optimizations."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One request batch at a time per process: spend threads inside the op, not across ops.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if self.num_threads:
            options.intra_op_num_threads = self.num_threads
        (weights,) = self.spec().weights
        path = self.package_dir / weights
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise PackageError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise PackageError(f"{path} expects unsupported inputs {sorted(unknown)}")

    def infer(self, batch: Encoded) -> np.ndarray:
        """Run the session on the inputs the graph declares."""
        feed = {name: getattr(batch, name) for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return logits


class OnnxInt8Backend(OnnxBackend):
    """model_quantized.onnx: ORT dynamic int8 weights."""

    name = "onnx-int8"
    precision = "int8"
