"""The instruction-set caps this CPU allows, for running one check as other CPUs would.

oneDNN (torch's CPU convolutions and OpenVINO's CPU plugin both use it) honours
``ONEDNN_MAX_CPU_ISA``; torch's own ATen kernels honour ``ATEN_CPU_CAPABILITY``. Both
verified by what each runtime reports (bench/isa_caps.py: OpenVINO's primitive types,
oneDNN's verbose ISA line, ``torch.backends.cpu.get_cpu_capability()``). ONNX Runtime's
MLAS and LiteRT's XNNPACK have no such cap: they run this CPU's own ISA under every cap.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from pathlib import Path

#: oneDNN ISA (ONEDNN_MAX_CPU_ISA) -> the /proc/cpuinfo flags it needs, the ATen capability.
_LEVELS = (
    ("SSE41", ("sse4_1",), "default"),
    ("AVX", ("avx",), "default"),
    ("AVX2", ("avx2", "fma"), "avx2"),
    ("AVX512_CORE", ("avx512f", "avx512bw", "avx512vl", "avx512dq"), "avx512"),
    ("AVX512_CORE_BF16", ("avx512_bf16",), "avx512"),
    ("AVX512_CORE_AMX", ("amx_tile", "amx_bf16"), "avx512"),
)


@dataclasses.dataclass(frozen=True)
class IsaCap:
    """One cap: the oneDNN ISA and the ATen capability that go with it."""

    onednn: str
    aten: str

    @property
    def env(self) -> dict[str, str]:
        return {"ONEDNN_MAX_CPU_ISA": self.onednn, "ATEN_CPU_CAPABILITY": self.aten}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo does not exist)."""
    if not cpuinfo.is_file():
        return frozenset()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def isa_caps(flags: frozenset[str] | None = None) -> list[IsaCap]:
    """Every cap up to this CPU's own ISA, lowest first (each level needs the ones below)."""
    flags = cpu_flags() if flags is None else flags
    caps: list[IsaCap] = []
    for onednn, needs, aten in _LEVELS:
        if not set(needs) <= flags:
            break
        caps.append(IsaCap(onednn, aten))
    return caps


def kernel_isa(flags: frozenset[str] | None = None) -> str:
    """What compiled CPU kernels are built for here: the machine, its highest ISA level
    (``x86_64 AVX2``, ``x86_64 AVX512_CORE``) and an ``ATEN_CPU_CAPABILITY`` cap if set
    (inductor vectorises for the capped ISA). Part of the cache key of a compiled
    artifact, so no machine runs kernels compiled for another ISA."""
    caps = isa_caps(flags)
    level = caps[-1].onednn if caps else "baseline"
    capped = os.environ.get("ATEN_CPU_CAPABILITY")
    return f"{platform.machine()} {level}" + (f" ATEN_CPU_CAPABILITY={capped}" if capped else "")
