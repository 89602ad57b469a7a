"""The CPU's flags, the int8 preset native to it, and whether its int8-weight kernels saturate."""

from __future__ import annotations

from pathlib import Path

import pytest

import app.cpu
from app.cpu import cpu_flags, int8_preset, int8_weights_saturate

AVX2 = frozenset({"sse4_2", "avx", "avx2", "fma"})
VNNI = AVX2 | {"avx512f", "avx512_vnni"}


def test_cpu_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse4_2 avx2 avx512_vnni\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")
    assert cpu_flags(x86) == {"fpu", "sse4_2", "avx2", "avx512_vnni"}
    assert cpu_flags(arm) == {"fp", "asimd", "asimddp"}
    assert cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize(
    ("flags", "machine", "preset"),
    [
        (VNNI, "x86_64", "avx512_vnni"),
        (AVX2 | {"avx_vnni"}, "x86_64", "avx512_vnni"),  # AVX-VNNI (256-bit) has the dot product too
        (AVX2 | {"amx_int8"}, "x86_64", "avx512_vnni"),
        (AVX2, "x86_64", "avx2"),
        (AVX2 | {"avx512f", "avx512bw"}, "x86_64", "avx2"),  # AVX-512 without VNNI still saturates
        (frozenset({"asimd"}), "aarch64", "arm64"),
        (frozenset(), "arm64", "arm64"),
    ],
)
def test_the_preset_exact_on_a_cpu(flags: frozenset[str], machine: str, preset: str) -> None:
    assert int8_preset(flags, machine) == preset
    assert int8_weights_saturate(flags, machine) == (preset == "avx2")


def test_unknown_flags_keep_the_vnni_preset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(app.cpu, "cpu_flags", lambda: None)
    assert int8_preset(machine="x86_64") == "avx512_vnni"
    assert not int8_weights_saturate(machine="x86_64")
