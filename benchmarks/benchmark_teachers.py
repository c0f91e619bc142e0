#!/usr/bin/env python
"""Forward rate of the packaged real teachers (docs/teachers.md) on the token grid, one process.

Each teacher runs at the resolutions that give the listed token grids (DINOv2-S/14: grid × 14 px;
the CNNs: grid × 16 px) with a fraction of the patches kept (random per image), and prints a
Markdown table of images per second (the median of ``--rounds`` timed rounds after one warm-up
batch). Needs experiments/evidence_setup.sh.

Example (this CPU, 1 thread):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/benchmark_teachers.py --threads 1 --grids 7,8 --keep 0.5
"""
from __future__ import annotations

import argparse
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from comad.teachers import load_teacher  # noqa: E402
from comad.teachers.onnx_vit import convert_onnx_vit, write_dinov2_file  # noqa: E402
from comad.teachers.packaged import packaged_weights  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--grids", default="7,8", help="token grids per side (default 7,8)")
    p.add_argument("--keep", type=float, default=0.5, help="fraction of patches kept (default 0.5)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--rounds", type=int, default=3, help="timed batches per row (default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--dinov2-layers", default="-1,8", help="DINOv2 blocks to time (default the last and 8)")
    return p.parse_args(argv)


def teachers(grids: list[int], dinov2_layers: list[int], tmp: Path):
    """Yield (label, layer, teacher) for every row, loading each teacher once per resolution."""
    dinov2 = tmp / "dinov2_vits14.safetensors"
    write_dinov2_file(convert_onnx_vit(packaged_weights("dinov2_vits14_onnx")).state_dict, dinov2)
    for g in grids:
        t = load_teacher(dinov2, patch_size=14, img_size=14 * g, precision="fp32")
        for layer in dinov2_layers:
            yield "DINOv2-S/14", layer, t
        for name, label in (("mobilenet_v2", "MobileNetV2"), ("efficientnet_lite0", "EfficientNet-Lite0")):
            yield label, -1, load_teacher(packaged_weights(name), grid=g, precision="fp32")


def rate(teacher: torch.nn.Module, layer: int, batch: int, keep: float, rounds: int) -> float:
    """Median images/s of ``teacher(images, keep_idx, layers=layer)`` over ``rounds`` batches."""
    n = teacher.num_positions
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, teacher.img_size, teacher.img_size, generator=g)
    idx = torch.rand(batch, n, generator=g).argsort(1)[:, : max(1, round(keep * n))]
    teacher(x, idx, layers=layer)  # warm-up
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        teacher(x, idx, layers=layer)
        times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def cpu_name() -> str:
    """The CPU model (``lscpu``'s "Model name", from /proc/cpuinfo), else the platform's."""
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
    except OSError:
        m = None
    return m.group(1).strip() if m else platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    grids = [int(v) for v in args.grids.split(",")]
    layers = [int(v) for v in args.dinov2_layers.split(",")]
    print(f"{cpu_name()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"batch {args.batch}, {args.keep:.0%} of the patches kept\n")
    print("| teacher | layer | input px | token grid | kept tokens | img/s |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for label, layer, t in teachers(grids, layers, Path(tmp)):
            r = rate(t, layer, args.batch, args.keep, args.rounds)
            side = t.img_size // t.patch_size
            print(f"| {label} | {layer} | {t.img_size} | {side}x{side} | {max(1, round(args.keep * t.num_positions))} | "
                  f"{r:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
