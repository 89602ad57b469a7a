"""ONNX Runtime backends (fp32 graph-optimized and dynamic int8): onnxruntime + numpy only."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from app.backends.base import Backend
from app.cpu import int8_weights_drift
from app.package import PackageError
from app.tokenizer import Encoded

logger = logging.getLogger(__name__)


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

    def load(self) -> None:
        """The session, and a warning when this CPU computes the package's int8 weights inexactly."""
        super().load()
        preset = self.manifest.source.get("quantization", {}).get("preset")
        if int8_weights_drift(preset):
            logger.warning(
                "%s was quantized with the %s preset (int8 weights), and this CPU has no VNNI: ORT's int8 kernels "
                "saturate here, so its answers may differ from the package's measured figures. Serve the onnx "
                "backend, or re-quantize for this CPU: python -m compression quantize --package DIR "
                "--quant-preset avx2",
                self.package_dir,
                preset,
            )
