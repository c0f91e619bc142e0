#!/usr/bin/env python
"""Distillation throughput: a naive step (a) against the project's step (b), side by side.

One process, one run, one device. Rows (per batch size):

* ``naive`` (a): fp32; each teacher runs the full image (all tokens, timm ``forward_features``)
  and the kept tokens are gathered afterwards; the student runs the full sequence with the
  dropped patches masked out of attention (same function as token dropping, full cost);
  un-fused attention; gating with Python loops over teachers; AdamW.
* ``shipped`` (b): ``CoMADDistiller.make_masks`` + ``compute_losses`` + backward + AdamW, under
  ``torch.autocast(<device>, bfloat16)`` on CUDA as the runner uses it (on the CPU the runner
  uses no autocast: fp32).
* options added to (b) with ``+``, each a switch a user can set (any combination):
  ``+bf16`` (CPU only) bf16 autocast on the CPU (AMX / AVX512-BF16; the runner's ``amp='on'``);
  ``+bf16t`` the teachers held and run in bf16 (``model.teacher_precision='bf16'``);
  ``+compile`` the loss computation ``torch.compile``d as one graph (``model.compile=True``;
  token counts are fixed per teacher, so it compiles once; compile time is in the warm-up).

Each in ``model`` mode (synthetic images already on the device) and end-to-end: ``e2e`` reads
the JPEGs through the training data pipeline (``ImageFolderDataset`` + the train transform in
DataLoader workers: uint8 transport, pinned memory, persistent workers, prefetch; normalised on
the device), and ``e2e-dali`` (``--dali``) is the train loader of
``data.backend='dali'``. ``decode-cpu`` (``--decode-rate``) is the torch path's rate on one core.

Columns: images/s, ms/step (mean and median), peak memory, analytic GFLOP per image (matmul
FLOPs of every ViT / decoder / adapter from its dims and token counts, 2 FLOP per MAC, attention
included; training = 3x forward, 2x for the patch embedding whose input needs no gradient),
achieved TFLOP/s, MFU against a matmul peak measured in the same run (bf16 on CUDA; fp32 on the
CPU), and the ratios (b)/(a) and end-to-end / model-only. Written to ``<out>/benchmark_distill.
{csv,json}`` (atomically, after every row, so a cut run keeps what it measured).

The benchmark itself is the package :mod:`benchmarks.distill`; this tool reads the options.

Examples::

    python benchmarks/benchmark_distill.py --device cpu --small --batch 16 --steps 3
    python benchmarks/benchmark_distill.py --device cuda --batches 256,512 --data DIR \
        --variants naive,shipped,shipped+compile,shipped+bf16t+compile --profile
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.distill import Settings, SettingsError, run_benchmark  # noqa: E402
from comad.cli import UsageError  # noqa: E402


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="one batch size (same as --batches N)")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 128,256,512 on CUDA, 16 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per model-only row (default 10 CUDA, 3 CPU)")
    ap.add_argument("--e2e-steps", type=int, default=None,
                    help="timed steps per end-to-end row (default 2x --steps); their warm-up adds workers x prefetch steps")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per batch size: every row runs --steps steps per round (default 1 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 CUDA, 1 CPU)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--data", type=Path, default=None,
                     help="ImageFolder root with a train/ split (default: make the demo photos under --out)")
    src.add_argument("--imagenet-like", type=int, default=None, metavar="N",
                     help="make N JPEGs per packaged photo with ImageNet's sizes (~500x375, quality 90) under "
                          "--out/imagenet_like and read them")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out", help="where the CSV / JSON go")
    ap.add_argument("--teachers-dir", type=Path, default=None, help="where the synthetic teacher files go (default: a temp dir)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--small", action="store_true", help="the CPU config: ViT-S-sized teachers, 112 px")
    size.add_argument("--tiny", action="store_true", help="tiny dims for the test suite")
    ap.add_argument("--compile", action="store_true", help="add shipped+compile rows (model.compile: one torch.compile graph)")
    ap.add_argument("--compile-batches", default=None, help="batch sizes of the rows with +compile (default: all)")
    ap.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: CPUs - 1)")
    ap.add_argument("--prefetch", type=int, default=2, help="DataLoader prefetch_factor")
    ap.add_argument("--no-e2e", action="store_true", help="model-only rows only")
    ap.add_argument("--no-align-fit", action="store_true", help="no align-fit row (the adapters' one-off alignment fit)")
    ap.add_argument("--dali", action="store_true",
                    help="add e2e-dali rows: the data.backend='dali' loader with --workers threads (the dali extra)")
    ap.add_argument("--decode-rate", action="store_true",
                    help="add a decode-cpu row: the torch data path's img/s on one CPU core (run on a quiet machine)")
    ap.add_argument("--no-cpu-bf16", action="store_true", help="skip the shipped+bf16 rows (CPU)")
    ap.add_argument("--variants", default=None,
                    help="comma list: naive, shipped, or shipped with options +bf16 (CPU autocast), +bf16t (bf16 "
                         "teachers), +compile, e.g. naive,shipped,shipped+bf16t+compile")
    ap.add_argument("--e2e-variants", default=None, help="the variants that also get end-to-end rows (default: all)")
    ap.add_argument("--profile", action="store_true",
                    help="profile every shipped variant at the largest batch (GPU busy time and kernel classes on "
                         "CUDA; per-phase times of the eager ones) into the JSON meta")
    return ap.parse_args(argv)


def _ints(text: str, option: str) -> list[int]:
    try:
        vals = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise UsageError(f"{option}: expected positive batch sizes, got {text!r}")
    return vals


def _names(text: str | None) -> list[str]:
    return list(dict.fromkeys(v.strip() for v in (text or "").split(",") if v.strip()))


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The options with their per-device defaults resolved; a bad one exits naming it."""
    if args.device == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available")
    if args.data is not None and not (args.data / "train").is_dir():
        raise UsageError(f"--data {args.data}: expected an ImageFolder root with a train/ folder")
    cuda = args.device == "cuda"
    batches = _ints(args.batches, "--batches") if args.batches else [args.batch] if args.batch else ([128, 256, 512] if cuda else [16])
    steps = args.steps or (10 if cuda else 3)
    variants = _names(args.variants) or ["naive", "shipped"] + (["shipped+bf16"] if not cuda and not args.no_cpu_bf16 else [])
    if args.compile and "shipped+compile" not in variants:
        variants.append("shipped+compile")
    e2e = [] if args.no_e2e else ["e2e"] + (
        ["e2e-dali"] if args.dali else [])
    e2e += ["decode-cpu"] if args.decode_rate else []
    try:
        return Settings(
            device=torch.device(args.device), preset="tiny" if args.tiny else "small" if args.small else "full",
            batches=batches, variants=variants, steps=steps, e2e_steps=args.e2e_steps or 2 * steps,
            rounds=args.rounds or (1 if cuda else 3), warmup=args.warmup if args.warmup is not None else (3 if cuda else 1),
            workers=args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1),
            prefetch=args.prefetch, out=args.out, data=args.data, teachers_dir=args.teachers_dir, profile=args.profile,
            compile_batches=_ints(args.compile_batches, "--compile-batches") if args.compile_batches else None,
            e2e_variants=[v.strip() for v in args.e2e_variants.split(",") if v.strip()] if args.e2e_variants else None,
            data_kinds=["model"] + e2e + ([] if args.no_align_fit else ["align-fit"]))
    except SettingsError as e:
        raise UsageError(f"--{e.field.replace('_', '-')}: {e}") from None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    settings = settings_from_args(args)
    if args.imagenet_like:
        from comad.data.imagenet_like import make_imagenet_like

        settings.data = make_imagenet_like(args.out / "imagenet_like", n_per_photo=args.imagenet_like)
    return run_benchmark(settings)


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("benchmark_distill", main)
