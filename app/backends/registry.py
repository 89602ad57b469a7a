"""What each named backend is: its class, the weights file(s) it reads and the install extra it needs.

Plain data with no imports, so the package contract (app.package) and the backend loader share it, and
naming a backend never imports its runtime (the ONNX path never imports torch).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendSpec:
    """A backend's declaration; `extra` is the pyproject optional-dependency group, None for the core install."""

    target: str  # "module:Class", imported only when the backend is used
    weights: tuple[str, ...]
    extra: str | None

    @property
    def install_hint(self) -> str:
        """The command that installs what the backend imports."""
        return f"pip install -e .[{self.extra}]" if self.extra else "pip install -e ."


REGISTRY: dict[str, BackendSpec] = {
    "torch": BackendSpec("app.backends.torch:TorchBackend", ("model.safetensors",), "torch"),
    "torch-int8": BackendSpec("app.backends.torch:TorchInt8Backend", ("model.safetensors",), "torch"),
    "onnx": BackendSpec("app.backends.onnx:OnnxBackend", ("model.onnx",), None),
    "onnx-int8": BackendSpec("app.backends.onnx:OnnxInt8Backend", ("model_quantized.onnx",), None),
    "fake": BackendSpec("app.backends.fake:FakeBackend", (), None),
}
