"""One benchmark run's settings and what every row shares: the device, the pieces, the steps,
the FLOP counts and the matmul peaks (:class:`Bench`)."""
from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor

from .flops import flops_for
from .naive import NaiveStep
from .parts import (
    PRESETS,
    build_parts,
    fused_attention_report,
    load_distiller,
    write_teachers,
)
from .timing import measure_matmul_peak
from .variants import ShippedStep, configured, parse_variant

__all__ = ["SettingsError", "Settings", "Bench"]


class SettingsError(ValueError):
    """A bad value of one :class:`Settings` field (``field``: its name)."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(message)
        self.field = field_name


@dataclass
class Settings:
    """What one run measures (every default already resolved; see benchmarks/benchmark_distill.py).

    ``data_kinds``: the data paths of the rows, in table order, each a key of
    :data:`benchmarks.distill.runners.RUNNERS`. ``data``: the ImageFolder root of the end-to-end rows
    (None: :func:`benchmarks.distill.suite.run_benchmark` makes the demo photos under ``out`` and sets
    it). ``flags``: each variant's options (from its name).
    """

    device: torch.device
    preset: str
    batches: list[int]
    variants: list[str]
    steps: int
    e2e_steps: int
    rounds: int
    warmup: int
    workers: int
    prefetch: int
    out: Path
    compile_batches: list[int] | None = None  # default: ``batches``
    e2e_variants: list[str] | None = None  # default: ``variants``
    data_kinds: list[str] = field(default_factory=lambda: ["model"])
    data: Path | None = None
    teachers_dir: Path | None = None  # default: a temporary folder
    profile: bool = False
    flags: dict[str, frozenset[str]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise SettingsError("preset", f"expected one of {sorted(PRESETS)}, got {self.preset!r}")
        self.flags = {}
        for v in self.variants:
            try:
                self.flags[v] = parse_variant(v)[1]
            except ValueError as e:
                raise SettingsError("variants", str(e)) from None
            if self.cuda and "bf16" in self.flags[v]:
                raise SettingsError("variants", f"{v}: +bf16 is the CPU's autocast; on CUDA every shipped row runs "
                                    "under bf16 autocast already (use +bf16t for bf16 teachers)")
        self.compile_batches = self.compile_batches or list(self.batches)
        self.e2e_variants = self.e2e_variants or list(self.variants)
        extra = set(self.e2e_variants) - set(self.variants)
        if extra:
            raise SettingsError("e2e_variants", f"{sorted(extra)} not among the variants {self.variants}")

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def config(self) -> dict[str, Any]:
        """The preset's sizes."""
        return PRESETS[self.preset]


def _data_stats(data: Path | None) -> dict[str, Any] | None:
    """Count, mean size (KB) and mean width / height of the end-to-end rows' JPEGs."""
    if data is None:
        return None
    from comad.data.imagenet_like import jpeg_stats

    return jpeg_stats(Path(data) / "train")


class Bench:
    """The shared state of a run: built once (synthetic teachers, the distiller, both steps,
    FLOP counts, matmul peaks), read by every row runner."""

    def __init__(self, settings: Settings, teachers_dir: Path) -> None:
        s = self.settings = settings
        self.device = s.device
        t0 = time.perf_counter()
        distiller_cls, self.why_missing = load_distiller()
        self.model, self.parts = build_parts(s.config, write_teachers(s.config, teachers_dir), s.device, distiller_cls)
        self.setup_s = time.perf_counter() - t0
        self.naive = NaiveStep(self.parts)
        amp = torch.bfloat16 if s.cuda else None
        self.shipped = ShippedStep(self.model, amp) if self.model is not None else None
        self.shipped_bf16 = ShippedStep(self.model, torch.bfloat16) if self.model is not None and not s.cuda else None
        self.flops = dict(naive=flops_for(self.parts, naive=True), shipped=flops_for(self.parts, naive=False))
        self.peaks = self._matmul_peaks()

    def _matmul_peaks(self) -> dict[str, dict[str, Any]]:
        """The peak MFU divides by (bf16 on CUDA, fp32 on the CPU), and the CPU's bf16 peak when a
        row uses bf16 there."""
        s = self.settings
        n = s.config["matmul_n"]
        peaks = {self.peak_key: measure_matmul_peak(s.device, torch.bfloat16 if s.cuda else torch.float32, n)}
        if not s.cuda and any(f & {"bf16", "bf16t"} for f in s.flags.values()):
            peaks["bf16"] = measure_matmul_peak(s.device, torch.bfloat16, n)
        return peaks

    @property
    def peak_key(self) -> str:
        return "bf16" if self.settings.cuda else "fp32"

    def mfu_peak(self, variant: str) -> tuple[float, bool]:
        """(the TFLOP/s a row's MFU divides by, whether it is the CPU's bf16 peak)."""
        cpu_bf16 = not self.settings.cuda and bool(self.settings.flags[variant] & {"bf16", "bf16t"})
        return self.peaks["bf16" if cpu_bf16 else self.peak_key]["tflops"], cpu_bf16

    def step(self, variant: str) -> Callable[[Tensor, int], Tensor]:
        """The step a variant runs (raises when the distiller is missing for a shipped one)."""
        if variant == "naive":
            return self.naive
        if self.model is None:
            raise RuntimeError(self.why_missing)
        return self.shipped_bf16 if "bf16" in self.settings.flags[variant] else self.shipped

    def scope(self, variant: str) -> ContextManager[None]:
        """The distiller configured for a variant (nothing for the naive step)."""
        if variant == "naive":
            return contextlib.nullcontext()
        return configured(self.model, self.settings.flags[variant])

    def meta(self) -> dict[str, Any]:
        """What the JSON ``meta`` records about the run before any row."""
        s, cuda = self.settings, self.settings.cuda
        peak = self.peaks[self.peak_key]
        meta: dict[str, Any] = dict(
            device=torch.cuda.get_device_name(s.device) if cuda else (platform.processor() or platform.machine()),
            cpu_count=os.cpu_count(), torch=torch.__version__, python=platform.python_version(), preset=s.preset,
            config={k: (list(v) if isinstance(v, tuple) else v) for k, v in s.config.items()},
            batches=s.batches, steps=s.steps, e2e_steps=s.e2e_steps, rounds=s.rounds, warmup=s.warmup,
            workers=s.workers, prefetch=s.prefetch, data=str(s.data) if s.data else None, matmul_peak=self.peaks,
            mfu_denominator=f"measured {self.peak_key} matmul peak ({peak['tflops']:.2f} TFLOP/s, n={peak['n']})",
            flops_per_image=self.flops, fused_attention=fused_attention_report(self.parts),
            distiller_available=self.model is not None, distiller_missing_reason=self.why_missing,
            data_files=_data_stats(s.data), setup_s=self.setup_s, tf32=False,
            amp_shipped="bf16" if cuda else "off (the runner enables bf16 autocast on CUDA only)")
        try:
            import timm

            meta["timm"] = timm.__version__
        except ImportError:
            pass
        return meta
