"""What the CPU offers int8 inference: which ORT quantization preset computes exactly on it.

ORT's dynamic int8 kernels multiply uint8 activations by the weights. With int8 weights (the `avx512_vnni`
preset) an x86 CPU without a dot-product instruction (VNNI, AVX-VNNI or AMX) sums pairs of products in 16 bits
(vpmaddubsw), which saturates: the logits drift (measured in docs/experiments.md, "int8 and the CPU"). uint8
weights (the `avx2` preset) take a widening path that does not, and the onnx-int8 backend has ORT shift int8
weights to uint8 on such a CPU (app.backends.onnx), which is exact.
"""

from __future__ import annotations

import platform
from pathlib import Path

INT8_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
ARM_MACHINES = frozenset({"arm64", "aarch64"})
CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = CPUINFO) -> frozenset[str] | None:
    """The CPU's feature flags from /proc/cpuinfo (x86 `flags`, ARM `Features`); None where it cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return None


def int8_preset(flags: frozenset[str] | None = None, machine: str | None = None) -> str:
    """The quantization preset whose int8 kernels are exact on this CPU (or the given flags and machine)."""
    machine = (machine or platform.machine()).lower()
    if machine in ARM_MACHINES:
        return "arm64"
    flags = cpu_flags() if flags is None else flags
    if flags is None or flags & INT8_DOT_PRODUCT_FLAGS:
        return "avx512_vnni"  # unknown flags: the preset the shipped packages use
    return "avx2"


def int8_weights_saturate(flags: frozenset[str] | None = None, machine: str | None = None) -> bool:
    """Whether ORT's kernels for int8 weights saturate on this CPU (or the given flags and machine): x86 without VNNI."""
    return int8_preset(flags, machine) == "avx2"
