"""Measuring steps: timed loops, the matmul peak MFU is taken against, and the diagnostics
(host-sync audit, profiler record, per-phase times) of the shipped step.

On CUDA every timing uses CUDA events with no host synchronisation inside the timed loop; on
the CPU the host clock.
"""
from __future__ import annotations

import statistics
import time
import traceback
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

from .loaders import synthetic_batches
from .variants import PHASES, ShippedStep

__all__ = ["measure_matmul_peak", "peak_mem_mib", "time_steps", "merge_timings", "KERNEL_CLASSES", "kernel_class",
           "phase_times", "profile_step", "sync_audit"]

#: where the code whose host syncs :func:`sync_audit` reports lives (the comad package)
_PACKAGE = Path(__file__).resolve().parents[1]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_mm(a: Tensor, b: Tensor) -> float:
    """Seconds of one ``a @ b`` (CUDA events on CUDA)."""
    if a.device.type == "cuda":
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        torch.mm(a, b)
        e.record()
        e.synchronize()
        return s.elapsed_time(e) / 1e3
    t0 = time.perf_counter()
    torch.mm(a, b)
    return time.perf_counter() - t0


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> dict[str, Any]:
    """Median TFLOP/s of an n³ matmul in ``dtype`` on ``device`` (random operands, warmed up)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = [torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2)]
    b = [torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2)]
    for i in range(3):
        torch.mm(a[i % 2], b[i % 2])
    _sync(device)
    t = statistics.median(_timed_mm(a[i % 2], b[i % 2]) for i in range(reps))
    return dict(tflops=2 * n**3 / t / 1e12, n=n, dtype=str(dtype).replace("torch.", ""), median_s=t, reps=reps)


def peak_mem_mib(device: torch.device) -> float:
    """Peak allocated device memory (CUDA), or the process's high-water RSS (CPU), in MiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; process high-water mark


def time_steps(step: Callable[[Tensor, int], Tensor], batches: Iterator[Tensor], warmup: int, steps: int,
               device: torch.device, start: int = 0) -> dict[str, Any]:
    """Run ``warmup`` then ``steps`` steps (step indices from ``start``); CUDA events around every
    step (no host sync inside the timed loop).

    Returns:
        dict of ``total_ms``, ``per_step_ms`` (list), ``warmup_s``, ``peak_mem_mib``.
    """
    t0 = time.perf_counter()
    for i in range(warmup):
        step(next(batches), start + i)
    _sync(device)
    warm_s = time.perf_counter() - t0
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        ev = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
        ev[0].record()
        for i in range(steps):
            step(next(batches), start + warmup + i)
            ev[i + 1].record()
        ev[-1].synchronize()
        per = [ev[i].elapsed_time(ev[i + 1]) for i in range(steps)]
        total_ms = ev[0].elapsed_time(ev[-1])
    else:
        marks = [time.perf_counter()]
        for i in range(steps):
            step(next(batches), start + warmup + i)
            marks.append(time.perf_counter())
        per = [(marks[i + 1] - marks[i]) * 1e3 for i in range(steps)]
        total_ms = (marks[-1] - marks[0]) * 1e3
    return dict(total_ms=total_ms, per_step_ms=per, warmup_s=warm_s, peak_mem_mib=peak_mem_mib(device))


def merge_timings(prev: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """Two :func:`time_steps` results of one row as one (the warm-up is the first one's)."""
    if prev is None:
        return new
    return dict(total_ms=prev["total_ms"] + new["total_ms"], per_step_ms=prev["per_step_ms"] + new["per_step_ms"],
                warmup_s=prev["warmup_s"], peak_mem_mib=max(prev["peak_mem_mib"], new["peak_mem_mib"]))


KERNEL_CLASSES = (  # (class, substrings of a lower-cased CUDA kernel name); the first match wins
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas")),
    ("attention", ("flash", "fmha", "attention", "attn")),
    ("inductor (triton)", ("triton",)),
    ("copy / memset", ("memcpy", "memset", "copy_", "copykernel")),
)


def kernel_class(name: str) -> str:
    """The class of :data:`KERNEL_CLASSES` a CUDA kernel name falls in."""
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "elementwise / norm / other"


def phase_times(shipped: ShippedStep, images: Tensor, start: int, n: int = 3) -> dict[str, dict[str, float] | None]:
    """Mean device (CUDA events; on the CPU, None) and host (issue) ms of each of :data:`PHASES` of
    the eager shipped step, over ``n`` steps from step index ``start``."""
    cuda = images.device.type == "cuda"
    gpu = {k: 0.0 for k in PHASES}
    host = {k: 0.0 for k in PHASES}
    for i in range(n):
        events: list[Any] = []
        times = [time.perf_counter()]

        def mark() -> None:
            times.append(time.perf_counter())
            if cuda:
                events.append(torch.cuda.Event(enable_timing=True))
                events[-1].record()

        if cuda:
            events.append(torch.cuda.Event(enable_timing=True))
            events[0].record()
        shipped(images, start + i, mark=mark)
        if cuda:
            events[-1].synchronize()
        for j, k in enumerate(PHASES):
            gpu[k] += events[j].elapsed_time(events[j + 1]) / n if cuda else 0.0
            host[k] += (times[j + 1] - times[j]) * 1e3 / n
    return dict(gpu_ms=gpu if cuda else None, host_ms=host)


def _kernel_times(prof: Any, steps: int) -> dict[str, float]:
    """GPU ms per step of every CUDA kernel name in a ``torch.profiler`` record."""
    per_kernel: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[e.name] = per_kernel.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e3 / steps
    return per_kernel


def profile_step(step: ShippedStep, batch: int, img_size: int, device: torch.device, phases: bool = True,
                 steps: int = 3) -> dict[str, Any]:
    """One variant's step under ``torch.profiler``: wall and GPU-busy ms per step, the GPU time by
    kernel class and the top kernels (CUDA; empty on the CPU); with ``phases``, :func:`phase_times`."""
    from torch.profiler import ProfilerActivity, profile

    it = synthetic_batches(batch, img_size, device, seed=7)
    for i in range(2):  # warm-up (and compilation)
        step(next(it), 20_000 + i)
    _sync(device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for i in range(steps):
            step(next(it), 20_010 + i)
        _sync(device)
        wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    per_kernel = _kernel_times(prof, steps)
    by_class: dict[str, float] = {}
    for name, ms in per_kernel.items():
        by_class[kernel_class(name)] = by_class.get(kernel_class(name), 0.0) + ms
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:12]
    out: dict[str, Any] = dict(batch=batch, wall_ms=wall_ms, gpu_busy_ms=sum(per_kernel.values()),
                               kernels_per_step=len(per_kernel), by_class_ms=by_class,
                               top_kernels_ms=[[n[:140], ms] for n, ms in top])
    if phases:
        out["phases"] = phase_times(step, next(it), 20_100)
    return out


def sync_audit(step: Callable[[Tensor, int], Tensor], images: Tensor, step_index: int) -> list[str]:
    """Host synchronisations in one step (CUDA): ``torch.cuda.set_sync_debug_mode('warn')``,
    each warning located at the innermost frame of the comad package on the Python stack."""
    found: list[str] = []
    old = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        frames = [f for f in traceback.extract_stack()[:-1]
                  if f.filename.startswith(str(_PACKAGE)) and f.name not in ("show", "sync_audit")]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else f"{filename}:{lineno}"
        found.append(f"{where}: {str(message).splitlines()[0][:120]}")

    torch.cuda.synchronize()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step(images, step_index)
            finally:
                torch.cuda.set_sync_debug_mode("default")
    finally:
        warnings.showwarning = old
    torch.cuda.synchronize()
    return found
