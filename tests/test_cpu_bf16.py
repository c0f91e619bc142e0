"""comad.cpu_bf16: bf16 on a CPU without bf16 units is named once, with the flags and the faster setting."""
import warnings

import pytest

from comad import cpu_bf16
from comad.cpu_bf16 import cpu_flags, cpu_has_fast_bf16, warn_if_slow_bf16

EPYC_AVX2 = frozenset("fpu sse sse2 avx avx2 fma".split())
XEON_AMX = frozenset("fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile".split())


def test_flags_decide(tmp_path):
    assert cpu_has_fast_bf16(EPYC_AVX2, "x86_64") is False
    assert cpu_has_fast_bf16(XEON_AMX, "x86_64") is True
    assert cpu_has_fast_bf16(frozenset({"avx512_bf16"}), "x86_64") is True  # AMD Zen 4
    assert cpu_has_fast_bf16(frozenset({"fp", "asimd", "bf16"}), "aarch64") is True
    assert cpu_has_fast_bf16(frozenset(), "x86_64") is None  # unknown: no warning
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2\n\nprocessor\t: 1\n")
    assert cpu_flags.__wrapped__(str(info)) == frozenset({"fpu", "sse2", "avx2"})


def test_warns_once_naming_flags_and_faster_setting(monkeypatch):
    monkeypatch.setattr(cpu_bf16, "_warned", set())
    with pytest.warns(RuntimeWarning) as rec:
        assert warn_if_slow_bf16("model.teacher_precision='bf16'", "model.teacher_precision='amp'", EPYC_AVX2, "x86_64")
    msg = str(rec[0].message)
    assert "amx_bf16" in msg and "avx512_bf16" in msg and "model.teacher_precision='amp'" in msg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_if_slow_bf16("model.teacher_precision='bf16'", "x", EPYC_AVX2, "x86_64")  # once
        assert not warn_if_slow_bf16("bf16 autocast", "fp32", XEON_AMX, "x86_64")  # fast CPU: silent
