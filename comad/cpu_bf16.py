"""Whether this CPU computes bf16 in hardware, and a one-time warning where it does not.

On x86 CPUs without ``amx_bf16`` or ``avx512_bf16`` (e.g. an AMD EPYC with AVX2 only) PyTorch
emulates bf16 matmuls: a 1024² bf16 matmul ran at 0.001 TFLOP/s there against 0.15 in fp32, so
``model.teacher_precision='bf16'`` or a bf16 autocast made the CPU step several times slower than
fp32 — silently. :func:`warn_if_slow_bf16` says so once per setting and process.
"""
from __future__ import annotations

import platform
import warnings
from functools import lru_cache
from pathlib import Path

__all__ = ["BF16_FLAGS", "cpu_flags", "cpu_has_fast_bf16", "warn_if_slow_bf16"]

#: x86 flags of hardware bf16 matmul units (Intel AMX, AVX-512 BF16: Xeon Sapphire Rapids+, AMD Zen 4+).
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
_warned: set[str] = set()


@lru_cache(maxsize=1)
def cpu_flags(cpuinfo: str = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of the first CPU in ``cpuinfo`` (x86 ``flags`` or Arm ``Features``); empty if unknown."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def cpu_has_fast_bf16(flags: frozenset[str] | None = None, machine: str | None = None) -> bool | None:
    """True / False where the flags tell, None where they do not (an unknown architecture or no cpuinfo)."""
    flags = cpu_flags() if flags is None else flags
    machine = (machine or platform.machine()).lower()
    if not flags:
        return None
    if machine in ("x86_64", "amd64", "i686"):
        return any(f in flags for f in BF16_FLAGS)
    if machine in ("aarch64", "arm64"):
        return "bf16" in flags
    return None


def warn_if_slow_bf16(setting: str, faster: str, flags: frozenset[str] | None = None,
                      machine: str | None = None) -> bool:
    """Warn once per ``setting`` when bf16 runs on a CPU without bf16 units; returns whether it warned.

    Args:
        setting: the option that asks for bf16 on the CPU (e.g. ``"model.teacher_precision='bf16'"``).
        faster: the setting to use instead (e.g. ``"model.teacher_precision='amp'"``).
    """
    if setting in _warned or cpu_has_fast_bf16(flags, machine) is not False:
        return False
    _warned.add(setting)
    warnings.warn(
        f"{setting} on a CPU without bf16 units (its flags have none of {', '.join(BF16_FLAGS)}): PyTorch emulates "
        f"bf16 matmuls there, often 10-150x slower than fp32, so this run will be slow. Use {faster} on this "
        "machine.", RuntimeWarning, stacklevel=2)
    return True
