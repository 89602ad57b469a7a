"""ONNX Runtime backends (fp32 graph-optimized and dynamic int8): onnxruntime + numpy only."""

from __future__ import annotations

import logging

import numpy as np
import onnxruntime as ort

from app.backends.base import Backend
from app.cpu import int8_weights_saturate
from app.package import PackageError
from app.tokenizer import Encoded

logger = logging.getLogger(__name__)

# ORT's exact path for int8 weights on x86 without VNNI: it shifts them to uint8 (weights and zero points + 128,
# the same dequantized values) and runs the widening uint8 kernels instead of the saturating int8 ones.
EXACT_INT8_ON_X64 = "session.x64quantprecision"


class OnnxBackend(Backend):
    """model.onnx on the CPU execution provider."""

    name = "onnx"
    precision = "fp32"

    def load(self) -> None:
        """Create the inference session and check the inputs its graph declares."""
        (weights,) = self.spec().weights
        path = self.package_dir / weights
        try:
            self.session = ort.InferenceSession(str(path), self.session_options(), providers=["CPUExecutionProvider"])
        except Exception as exc:  # ORT raises its own exception types for bad graphs
            raise PackageError(f"onnxruntime cannot load {path}: {exc}") from exc
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        if unknown:
            raise PackageError(f"{path} expects unsupported inputs {sorted(unknown)}")

    def session_options(self) -> ort.SessionOptions:
        """All graph optimizations, sequential execution, the configured intra-op threads."""
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # One request batch at a time per process: spend threads inside the op, not across ops.
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.inter_op_num_threads = 1
        if self.num_threads:
            options.intra_op_num_threads = self.num_threads
        return options

    def infer(self, batch: Encoded) -> np.ndarray:
        """Run the session on the inputs the graph declares."""
        feed = {name: getattr(batch, name) for name in self.input_names}
        (logits,) = self.session.run(["logits"], feed)
        return logits


class OnnxInt8Backend(OnnxBackend):
    """model_quantized.onnx: ORT dynamic int8 weights."""

    name = "onnx-int8"
    precision = "int8"

    def session_options(self) -> ort.SessionOptions:
        """The fp32 options, plus ORT's exact int8 path where this CPU's int8-weight kernels saturate."""
        options = super().session_options()
        if not int8_weights_saturate():
            return options
        if self.exact_int8:
            options.add_session_config_entry(EXACT_INT8_ON_X64, "1")
            logger.info(
                "%s: this CPU has no VNNI, on which ORT's int8-weight kernels saturate; serving with %s=1, which "
                "computes int8 weights exactly as uint8 (INTENT_EXACT_INT8=false: faster, inexact)",
                self.package_dir,
                EXACT_INT8_ON_X64,
            )
        else:
            logger.warning(
                "%s: this CPU has no VNNI and INTENT_EXACT_INT8 is false: ORT's int8-weight kernels saturate here, "
                "so answers may differ from the package's measured figures",
                self.package_dir,
            )
        return options
