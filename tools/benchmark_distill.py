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
the device) and ``e2e-gpudecode`` (CUDA) reads bytes in the workers and decodes + crops on the
GPU (:mod:`comad.fast.gpu_decode`).

Columns: images/s, ms/step (mean and median), peak memory, analytic GFLOP per image (matmul
FLOPs of every ViT / decoder / adapter from its dims and token counts, 2 FLOP per MAC, attention
included; training = 3x forward, 2x for the patch embedding whose input needs no gradient),
achieved TFLOP/s, MFU against a matmul peak measured in the same run (bf16 on CUDA; fp32 on the
CPU), and the ratios (b)/(a) and end-to-end / model-only. Written to ``<out>/benchmark_distill.
{csv,json}`` (atomically, after every row, so a cut run keeps what it measured).

Examples::

    python tools/benchmark_distill.py --device cpu --small --batch 16 --steps 3
    python tools/benchmark_distill.py --device cuda --batches 256,512 --data DIR \
        --variants naive,shipped,shipped+compile,shipped+bf16t+compile --profile
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import csv
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from comad.io import atomic_write_json, atomic_write_text  # noqa: E402
from comad.losses import map_kl, token_kl  # noqa: E402
from comad.masking import MaskGenerator, Masks, indices_to_mask  # noqa: E402
from comad.models.vit import gather_tokens, scatter_tokens  # noqa: E402

TEACHER_FORMATS = ("mae", "ibot", "mocov3")
#: small projection heads in the synthetic teacher files (dropped at load; keeps writes quick)
_HEAD_OPTS = {"mae": {}, "ibot": dict(out_dim=256, patch_out_dim=256), "mocov3": dict(mlp_dim=256, out_dim=64)}

PRESETS: dict[str, dict[str, Any]] = {
    # the paper's setting: three ViT-B/16 teachers, ViT-Tiny student, 224 px
    "full": dict(img_size=224, teacher=dict(embed_dim=768, depth=12, num_heads=12),
                 student="vit_tiny_patch16_224", decoder=dict(depth=2, num_heads=3),
                 student_keep=0.25, teacher_keep=(0.50, 0.65, 0.80), matmul_n=8192),
    # the CPU configuration of the issue: ViT-S-sized teachers, 112 px
    "small": dict(img_size=112, teacher=dict(embed_dim=384, depth=12, num_heads=6),
                  student="vit_tiny_patch16_224", decoder=dict(depth=2, num_heads=3),
                  student_keep=0.25, teacher_keep=(0.50, 0.65, 0.80), matmul_n=1024),
    # for the test suite
    "tiny": dict(img_size=64, teacher=dict(embed_dim=32, depth=2, num_heads=2),
                 student=dict(embed_dim=32, depth=2, num_heads=2), decoder=dict(depth=1, num_heads=2),
                 student_keep=0.25, teacher_keep=(0.50, 0.65, 0.80), matmul_n=128),
}

COLUMNS = ["row", "variant", "data", "batch", "steps", "status", "img_per_s", "ms_per_step", "ms_per_step_median",
           "img_per_s_median", "peak_mem_mib", "gflop_per_img", "tflops", "mfu", "b_over_a", "e2e_over_model",
           "b_over_a_median", "e2e_over_model_median", "note"]


# --------------------------------------------------------------------------------------- FLOPs
def vit_blocks_flops(dim: int, depth: int, tokens: int, mlp_ratio: float = 4.0) -> float:
    """Forward matmul FLOPs of ``depth`` transformer blocks (width ``dim``) on ``tokens`` tokens.

    Per block: qkv ``2·T·D·3D`` + projection ``2·T·D·D`` + MLP ``2·2·T·D·H`` (H = int(D·mlp_ratio))
    + attention scores and weighted sum ``2·2·T²·D``.
    """
    hidden = int(dim * mlp_ratio)
    per_block = 2 * tokens * dim * (3 * dim + dim) + 2 * 2 * tokens * dim * hidden + 2 * 2 * tokens * tokens * dim
    return float(depth * per_block)


def patch_embed_flops(num_patches: int, dim: int, patch_size: int, in_chans: int = 3) -> float:
    """Forward FLOPs of a patch-embedding convolution (one matmul of ``in_chans·p²`` -> ``dim``)."""
    return float(2 * num_patches * in_chans * patch_size * patch_size * dim)


def linear_flops(tokens: int, d_in: int, d_out: int) -> float:
    return float(2 * tokens * d_in * d_out)


@dataclass
class VitDims:
    """The sizes the FLOP count needs."""

    embed_dim: int
    depth: int
    mlp_ratio: float = 4.0
    patch_size: int = 16
    in_chans: int = 3
    prefix: int = 1  # CLS

    @classmethod
    def of(cls, vit: nn.Module) -> "VitDims":
        blk = vit.blocks[0]
        return cls(int(vit.embed_dim), len(vit.blocks), blk.mlp.fc1.out_features / vit.embed_dim,
                   int(vit.patch_embed.patch_size[0]), int(vit.patch_embed.proj.in_channels), int(vit.num_prefix_tokens))


def step_flops(teachers: Sequence[VitDims], teacher_tokens: Sequence[int], student: VitDims, student_tokens: int,
               decoder_dim: int, decoder_depth: int, decoder_mlp_ratio: float, num_positions: int,
               naive: bool) -> dict[str, float]:
    """Analytic matmul FLOPs of one training step, per image, by part.

    Args:
        teachers / teacher_tokens: each teacher's dims and kept patches (without CLS).
        student / student_tokens: the student's dims and kept patches.
        decoder_*: the decoder (its blocks run on all ``num_positions`` tokens, no CLS).
        naive: teachers and student compute all ``num_positions`` patches (step (a)).

    Returns:
        dict of ``teachers``, ``adapters``, ``student``, ``decoder`` and ``total`` FLOPs.
    """
    n = num_positions
    t_f = a_f = 0.0
    for dims, kept in zip(teachers, teacher_tokens):
        run = n if naive else kept
        t_f += patch_embed_flops(n, dims.embed_dim, dims.patch_size, dims.in_chans)
        t_f += vit_blocks_flops(dims.embed_dim, dims.depth, dims.prefix + run, dims.mlp_ratio)
        a_f += linear_flops(kept, dims.embed_dim, student.embed_dim)  # adapters on the kept tokens
    s_run = n if naive else student_tokens
    s_f = 2 * patch_embed_flops(n, student.embed_dim, student.patch_size, student.in_chans)  # fwd + weight grad
    s_f += 3 * vit_blocks_flops(student.embed_dim, student.depth, student.prefix + s_run, student.mlp_ratio)
    d_fwd = (linear_flops(student_tokens, student.embed_dim, decoder_dim)
             + vit_blocks_flops(decoder_dim, decoder_depth, n, decoder_mlp_ratio)
             + linear_flops(n, decoder_dim, student.embed_dim))
    d_f = 3 * d_fwd
    return dict(teachers=t_f, adapters=a_f, student=s_f, decoder=d_f, total=t_f + a_f + s_f + d_f)


# ------------------------------------------------------------------------------- naive step (a)
def _attention_with_bias(attn: nn.Module, x: Tensor, bias: Tensor) -> Tensor:
    """timm ``Attention`` computed the un-fused way with an additive (B, 1, 1, T) bias."""
    if getattr(attn, "gate", None) is not None:
        raise ValueError("naive step: gated attention is not supported")
    b, t, c = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    a = (q * attn.scale) @ k.transpose(-2, -1) + bias
    x = (a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, -1)
    norm = getattr(attn, "norm", None)
    if norm is not None:
        x = norm(x)
    return attn.proj(x)


def masked_full_forward(vit: nn.Module, images: Tensor, keep_idx: Tensor) -> Tensor:
    """The student the naive way: all patches through every block, the dropped ones masked out
    of attention (an additive -inf key bias), kept tokens gathered at the end.

    Computes the same function as :func:`comad.models.vit.forward_kept_tokens` (the dropped
    tokens never influence the kept ones) at the cost of the full sequence: (B, K, D).
    """
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    b, t = x.shape[:2]
    p = vit.num_prefix_tokens
    keep = torch.ones(b, t, dtype=torch.bool, device=x.device)
    keep[:, p:] = indices_to_mask(keep_idx, t - p)
    bias = torch.zeros(b, 1, 1, t, dtype=x.dtype, device=x.device).masked_fill(~keep[:, None, None, :], float("-inf"))
    for blk in vit.blocks:
        x = x + blk.drop_path1(blk.ls1(_attention_with_bias(blk.attn, blk.norm1(x), bias)))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return gather_tokens(vit.norm(x)[:, p:], keep_idx)


def naive_gating(student: Tensor, maps: Sequence[Tensor], seen: Sequence[Tensor], mode: str = "joint",
                 combine: str = "sum", temperature: float = 0.1, stop_gradient: bool = True
                 ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """:func:`comad.gating.consensus_gating` written with Python loops over the teachers.

    Args:
        student: (B, N, D); maps: K tensors (B, N, D); seen: K bool tensors (B, N).

    Returns:
        (target (B, N, D), has_target (B, N), weights: K tensors (B, N)).
    """
    k_n = len(maps)
    maps = [m * s.unsqueeze(-1) for m, s in zip(maps, seen)]
    with torch.set_grad_enabled(torch.is_grad_enabled() and not stop_gradient):
        s_n = F.normalize(student.float(), dim=-1)
        t_n = [F.normalize(m.float(), dim=-1) for m in maps]
        scores = []
        for k in range(k_n):
            affinity = (s_n * t_n[k]).sum(-1)
            acc = torch.zeros_like(affinity)
            cnt = torch.zeros_like(affinity)
            for j in range(k_n):
                if j != k:
                    acc = acc + (t_n[k] * t_n[j]).sum(-1) * seen[j]
                    cnt = cnt + seen[j].float()
            agreement = torch.where(cnt > 0, acc / cnt.clamp(min=1), torch.ones_like(acc))
            if mode == "mean":
                score = torch.zeros_like(affinity)
            elif mode == "affinity":
                score = affinity
            elif mode == "agreement":
                score = agreement
            else:
                score = affinity + agreement if combine == "sum" else affinity * agreement
            scores.append((score / temperature).masked_fill(~seen[k], float("-inf")))
        top = scores[0]
        for s in scores[1:]:
            top = torch.maximum(top, s)
        exps = [torch.exp(s - top) for s in scores]
        total = exps[0]
        for e in exps[1:]:
            total = total + e
        weights = [(e / total).nan_to_num(0.0) for e in exps]
        has_target = seen[0]
        for s in seen[1:]:
            has_target = has_target | s
    target = weights[0].unsqueeze(-1).to(maps[0].dtype) * maps[0]
    for w, m in zip(weights[1:], maps[1:]):
        target = target + w.unsqueeze(-1).to(m.dtype) * m
    return target, has_target, weights


@dataclass
class Parts:
    """The pieces both steps use: frozen teachers and adapters, a student and a decoder."""

    teachers: list[nn.Module]  # comad.teachers.Teacher
    adapters: nn.ModuleList
    student: nn.Module
    decoder: nn.Module
    mask_generator: MaskGenerator
    gating_cfg: dict[str, Any]
    loss_cfg: dict[str, Any]
    teacher_layers: list[int] = field(default_factory=list)


class NaiveStep:
    """Step (a): fp32, full-image teachers, masking applied afterwards, looped gating."""

    def __init__(self, parts: Parts, lr: float = 1.5e-4) -> None:
        if any(layer != -1 for layer in parts.teacher_layers):
            raise ValueError(f"naive step: only the last teacher layer is supported, got layers {parts.teacher_layers}")
        self.p = parts
        params = [q for m in (parts.student, parts.decoder) for q in m.parameters() if q.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)

    def masks(self, batch: int, device: torch.device, step: int) -> Masks:
        g = torch.Generator().manual_seed(step)
        return self.p.mask_generator(batch, generator=g).to(device)

    def losses(self, images: Tensor, masks: Masks) -> Tensor:
        p, n = self.p, masks.num_positions
        maps, seen = [], []
        with torch.no_grad():
            for teacher, adapter, idx in zip(p.teachers, p.adapters, masks.teachers):
                vit = teacher.vit
                full = vit.forward_features(images)[:, vit.num_prefix_tokens:]  # all patches
                maps.append(scatter_tokens(adapter(gather_tokens(full, idx)), idx, n))
                seen.append(indices_to_mask(idx, n))
        h = masked_full_forward(p.student, images, masks.student)
        recon = p.decoder(h, masks.student)
        s_mask = indices_to_mask(masks.student, n).unsqueeze(-1)
        pred = torch.where(s_mask, scatter_tokens(h, masks.student, n), recon)
        target, has_target, _ = naive_gating(pred, maps, seen, **p.gating_cfg)
        lc = p.loss_cfg
        loss = lc["token_weight"] * token_kl(gather_tokens(target, masks.student), h, tau=lc["token_tau"])
        return loss + lc["map_weight"] * map_kl(target, recon, has_target, tau=lc["map_tau"], positions=lc["map_positions"])

    def __call__(self, images: Tensor, step: int) -> Tensor:
        loss = self.losses(images, self.masks(images.shape[0], images.device, step))
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()


# ---------------------------------------------------------------------------- shipped step (b)
class ShippedStep:
    """Step (b): the distiller's own masks and losses, backward, AdamW (the runner's settings)."""

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None, lr: float = 1.5e-4) -> None:
        self.m = model
        self.amp_dtype = amp_dtype
        params = [q for q in model.parameters() if q.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)

    def __call__(self, images: Tensor, step: int, mark: Callable[[], None] | None = None) -> Tensor:
        """One step. With ``mark`` (diagnostics, :func:`phase_times`) the loss is computed in its two
        eager parts (``teacher_targets``, ``student_losses``) and ``mark()`` is called after each
        phase of :data:`PHASES`."""
        phased = mark is not None
        mark = mark or (lambda: None)
        masks = self.m.make_masks(images.shape[0], images.device, step=step)
        mark()
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            if not phased:
                out = self.m.compute_losses(images, masks)
            else:
                t_maps, seen = self.m.teacher_targets(images, masks)
                mark()
                out = self.m.student_losses(images, masks, t_maps, seen)
            loss = sum(v for k, v in out.items() if "loss" in k)
        mark()
        loss.backward()
        mark()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        mark()
        return loss.detach()


#: The phases of a step that :func:`phase_times` times (``ShippedStep(..., mark=)``).
PHASES = ("masks", "teachers", "student+losses", "backward", "optimizer")

VARIANT_FLAGS = ("bf16", "bf16t", "compile")


def parse_variant(name: str) -> tuple[str, frozenset[str]]:
    """``'shipped+bf16t+compile'`` -> ``('shipped', {'bf16t', 'compile'})``; the naive step takes none."""
    base, *flags = name.split("+")
    bad = set(flags) - set(VARIANT_FLAGS)
    if base not in ("naive", "shipped") or bad or (base == "naive" and flags) or len(set(flags)) != len(flags):
        raise ValueError(f"variant {name!r}: expected 'naive' or 'shipped' with options among "
                         f"{', '.join('+' + f for f in VARIANT_FLAGS)} (e.g. shipped+bf16t+compile)")
    return base, frozenset(flags)


@contextlib.contextmanager
def configured(model: nn.Module, flags: frozenset[str]) -> Iterator[None]:
    """The distiller set up as a variant asks: ``bf16t`` -> every teacher in ``bf16`` precision,
    ``compile`` -> ``model.compile_cfg = {}`` (the compiled graph is kept on the model across
    rows); restored on exit."""
    precisions = [t.precision for t in model.teachers]
    compile_cfg = model.compile_cfg
    try:
        for t in model.teachers:
            t.set_precision("bf16" if "bf16t" in flags else "amp")
        model.compile_cfg = {} if "compile" in flags else None
        yield
    finally:
        for t, prec in zip(model.teachers, precisions):
            t.set_precision(prec)
        model.compile_cfg = compile_cfg


# --------------------------------------------------------------------------------------- data
def build_loader(kind: str, data: Path, img_size: int, batch: int, num_batches: int, workers: int,
                 device: torch.device, prefetch: int, seed: int = 0) -> Iterator[Tensor]:
    """An iterator of ``num_batches`` normalised (B, 3, S, S) device batches from JPEGs.

    ``kind='cpu'``: decode + RandomResizedCrop + flip in DataLoader workers (the training
    pipeline), uint8 through pinned memory, normalised on the device.
    ``kind='gpu'``: the workers read bytes; nvJPEG decode + batched crops on the device (on a side
    stream, one batch ahead of the step).
    """
    from torch.utils.data import DataLoader, RandomSampler

    from comad.data import ImageFolderDataset, build_train_transform
    from comad.data.transforms import Normalize255

    g = torch.Generator().manual_seed(seed)
    pin = device.type == "cuda"
    common = dict(batch_size=batch, num_workers=workers, pin_memory=pin, drop_last=True,
                  persistent_workers=workers > 0, prefetch_factor=prefetch if workers > 0 else None)
    if kind == "cpu":
        ds = ImageFolderDataset(data, split="train", transform=build_train_transform(img_size, normalize=False),
                                on_corrupt="error")
        sampler = RandomSampler(ds, num_samples=batch * num_batches, generator=g)
        norm = Normalize255().to(device)  # what the configs' ComadDataPreprocessor does
        loader = DataLoader(ds, sampler=sampler, **common)
        for b in loader:
            yield norm(b["inputs"].to(device, non_blocking=True))
    elif kind == "gpu":
        from comad.data import ImageFolderDataset as IFD
        from comad.fast import EncodedImageDataset, GpuRandomResizedCrop, collate_encoded, split_encoded

        ds = EncodedImageDataset(IFD(data, split="train", on_corrupt="error"))
        sampler = RandomSampler(ds, num_samples=batch * num_batches, generator=g)
        crop = GpuRandomResizedCrop(img_size, device=device, seed=seed)
        loader = DataLoader(ds, sampler=sampler, collate_fn=collate_encoded, **common)
        # On CUDA, batch i + 1 is decoded and cropped on a side stream while the step of batch i runs.
        side = torch.cuda.Stream(device) if device.type == "cuda" else None
        pending = None
        for b in loader:
            with torch.cuda.stream(side) if side is not None else contextlib.nullcontext():
                x = crop(split_encoded(b), b["path"])
            if pending is not None:
                yield pending
            if side is not None:
                main = torch.cuda.current_stream(device)
                main.wait_stream(side)
                x.record_stream(main)
            pending = x
        if pending is not None:
            yield pending
    else:
        raise ValueError(f"loader kind must be 'cpu' or 'gpu', got {kind!r}")


# ------------------------------------------------------------------------------------ timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, n: int, reps: int = 10) -> dict[str, Any]:
    """Median TFLOP/s of an n³ matmul in ``dtype`` on ``device`` (random operands, warmed up)."""
    g = torch.Generator(device=device).manual_seed(0)
    a = [torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2)]
    b = [torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2)]
    for i in range(3):
        torch.mm(a[i % 2], b[i % 2])
    _sync(device)
    times = []
    for i in range(reps):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.mm(a[i % 2], b[i % 2])
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e) / 1e3)
        else:
            t0 = time.perf_counter()
            torch.mm(a[i % 2], b[i % 2])
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return dict(tflops=2 * n**3 / t / 1e12, n=n, dtype=str(dtype).replace("torch.", ""), median_s=t, reps=reps)


def _peak_mem_mib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; process high-water mark


def time_steps(step: Callable[[Tensor, int], Tensor], batches: Iterator[Tensor], warmup: int, steps: int,
               device: torch.device, start: int = 0) -> dict[str, Any]:
    """Run ``warmup`` then ``steps`` steps (step indices from ``start``); CUDA events around every
    step (no host sync inside the timed loop)."""
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
    return dict(total_ms=total_ms, per_step_ms=per, warmup_s=warm_s, peak_mem_mib=_peak_mem_mib(device))


def synthetic_batches(batch: int, img_size: int, device: torch.device, seed: int = 0) -> Iterator[Tensor]:
    """Two random (not zero) image buffers on the device, alternated."""
    g = torch.Generator(device=device).manual_seed(seed)
    bufs = [torch.randn(batch, 3, img_size, img_size, device=device, generator=g) for _ in range(2)]
    i = 0
    while True:
        yield bufs[i % 2]
        i += 1


KERNEL_CLASSES = (  # (class, substrings of a lower-cased CUDA kernel name); the first match wins
    ("gemm", ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "cublas")),
    ("attention", ("flash", "fmha", "attention", "attn")),
    ("inductor (triton)", ("triton",)),
    ("copy / memset", ("memcpy", "memset", "copy_", "copykernel")),
)


def kernel_class(name: str) -> str:
    low = name.lower()
    for cls, keys in KERNEL_CLASSES:
        if any(k in low for k in keys):
            return cls
    return "elementwise / norm / other"


def phase_times(shipped: "ShippedStep", images: Tensor, start: int, n: int = 3) -> dict[str, dict[str, float] | None]:
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


def profile_step(step: "ShippedStep", batch: int, img_size: int, device: torch.device, phases: bool = True,
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
    per_kernel: dict[str, float] = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel[e.name] = per_kernel.get(e.name, 0.0) + e.time_range.elapsed_us() / 1e3 / steps
    by_class: dict[str, float] = {}
    for name, ms in per_kernel.items():
        by_class[kernel_class(name)] = by_class.get(kernel_class(name), 0.0) + ms
    busy = sum(per_kernel.values())
    top = sorted(per_kernel.items(), key=lambda kv: -kv[1])[:12]
    out: dict[str, Any] = dict(batch=batch, wall_ms=wall_ms, gpu_busy_ms=busy, kernels_per_step=len(per_kernel),
                               by_class_ms=by_class, top_kernels_ms=[[n[:140], ms] for n, ms in top])
    if phases:
        out["phases"] = phase_times(step, next(it), 20_100)
    return out


def render_profile(profiles: dict[str, dict[str, Any]]) -> str:
    """A few lines per profiled variant (the full numbers are in the JSON meta)."""
    lines = []
    for v, p in profiles.items():
        if "error" in p:
            lines.append(f"profile {v}: failed: {p['error'].strip().splitlines()[-1]}")
            continue
        lines.append(f"profile {v} (B={p['batch']}): wall {p['wall_ms']:.1f} ms/step (under the profiler), GPU busy "
                     f"{p['gpu_busy_ms']:.1f} ms ({100 * p['gpu_busy_ms'] / p['wall_ms']:.0f} %), "
                     f"{p['kernels_per_step']} distinct kernels")
        lines.append("  by class: " + ", ".join(f"{k} {ms:.1f}" for k, ms in sorted(p["by_class_ms"].items(), key=lambda kv: -kv[1])))
        if "phases" in p:
            ph = p["phases"]
            if ph["gpu_ms"] is not None:
                lines.append("  phases GPU ms: " + ", ".join(f"{k} {ms:.1f}" for k, ms in ph["gpu_ms"].items()))
            lines.append("  phases host ms: " + ", ".join(f"{k} {ms:.1f}" for k, ms in ph["host_ms"].items()))
        for name, ms in p["top_kernels_ms"][:6]:
            lines.append(f"    {ms:7.2f} ms  {name[:110]}")
    return "\n".join(lines)


def sync_audit(step: Callable[[Tensor, int], Tensor], images: Tensor, step_index: int) -> list[str]:
    """Host synchronisations in one step (CUDA): ``torch.cuda.set_sync_debug_mode('warn')``,
    each warning located at the innermost frame of this repository on the Python stack."""
    import traceback as tb

    found: list[str] = []
    old = warnings.showwarning

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        stack = tb.extract_stack()[:-1]
        frames = [f for f in stack if f.filename.startswith(str(REPO)) and "/.venv/" not in f.filename
                  and f.name not in ("show", "sync_audit")]
        where = f"{Path(frames[-1].filename).name}:{frames[-1].lineno} ({frames[-1].line})" if frames else f"{filename}:{lineno}"
        found.append(f"{where}: {str(message).splitlines()[0][:120]}")

    torch.cuda.synchronize()
    try:
        warnings.showwarning = show
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


# ------------------------------------------------------------------------------------- setup
def _load_distiller() -> tuple[Any, str | None]:
    try:
        from comad.distiller import CoMADDistiller
    except ImportError as e:
        return None, f"comad.distiller is not importable ({e}); install the carried wheels (benchmarks/gpu_run.sh)"
    return CoMADDistiller, None


def write_teachers(preset: dict[str, Any], folder: Path) -> list[Path]:
    """Synthetic teachers in the three official layouts (random weights, seeded)."""
    from comad.teachers.synthetic import write_checkpoint

    paths = []
    t = preset["teacher"]
    for i, fmt in enumerate(TEACHER_FORMATS[: len(preset["teacher_keep"])]):
        path = folder / f"{fmt}_{t['embed_dim']}x{t['depth']}_{preset['img_size']}.pth"
        if not path.is_file():
            write_checkpoint(fmt, path, embed_dim=t["embed_dim"], depth=t["depth"], num_heads=t["num_heads"],
                             img_size=preset["img_size"], seed=i, **_HEAD_OPTS[fmt])
        paths.append(path)
    return paths


def build_parts(preset: dict[str, Any], ckpts: Sequence[Path], device: torch.device) -> tuple[Any, Parts]:
    """(the distiller or None, the parts of the naive step: shared frozen teachers/adapters,
    copies of the distiller's student and decoder)."""
    cls, _ = _load_distiller()
    t = preset["teacher"]
    student = preset["student"]
    kw_student = dict(arch=student)
    teachers_cfg = [dict(name=f, checkpoint=str(p), format=f, num_heads=t["num_heads"]) for f, p in zip(TEACHER_FORMATS, ckpts)]
    masking = dict(student_keep=preset["student_keep"], teacher_keep=list(preset["teacher_keep"]))
    if cls is not None:
        torch.manual_seed(0)
        m = cls(teachers=teachers_cfg, student=kw_student, decoder=dict(preset["decoder"]), masking=masking,
                img_size=preset["img_size"]).to(device)
        m.train()
        parts = Parts(list(m.teachers), m.adapters, copy.deepcopy(m.student), copy.deepcopy(m.decoder),
                      m.mask_generator, dict(m.gating_cfg), dict(m.loss_cfg), list(m.teacher_layers))
        return m, parts
    # without mmengine: the same pieces built directly (naive rows only)
    from comad.adapters import Adapter
    from comad.models.decoder import MaskedDecoder
    from comad.models.student import build_vit
    from comad.teachers import load_teacher

    torch.manual_seed(0)
    s = build_vit(student, img_size=preset["img_size"])
    n = int(s.patch_embed.num_patches)
    teachers = [load_teacher(p, format=f, img_size=preset["img_size"], num_heads=t["num_heads"]) for f, p in zip(TEACHER_FORMATS, ckpts)]
    dec = MaskedDecoder(s.embed_dim, n, embed_dim=s.embed_dim, depth=preset["decoder"]["depth"],
                        num_heads=preset["decoder"]["num_heads"], out_dim=s.embed_dim)
    adapters = nn.ModuleList(Adapter(tc.embed_dim, s.embed_dim, seed=1000 + i) for i, tc in enumerate(teachers))
    for mod in (*teachers, adapters, s, dec):
        mod.to(device)
    s.train()
    dec.train()
    parts = Parts(teachers, adapters, s, dec, MaskGenerator(n, preset["student_keep"], preset["teacher_keep"]),
                  dict(mode="joint", combine="sum", temperature=0.1, stop_gradient=True),
                  dict(token_weight=1.0, map_weight=1.0, token_tau=1.0, map_tau=4.0, map_positions="targets"),
                  [-1] * len(teachers))
    return None, parts


def flops_for(parts: Parts, naive: bool) -> dict[str, float]:
    mg = parts.mask_generator
    dec = parts.decoder
    return step_flops([VitDims.of(t.vit) for t in parts.teachers], [mg.count(r) for r in mg.teacher_ratios(0.0)],
                      VitDims.of(parts.student), mg.count(mg.student_keep), int(dec.pos_embed.shape[-1]), len(dec.blocks),
                      dec.blocks[0].mlp.fc1.out_features / dec.pos_embed.shape[-1], mg.num_positions, naive)


def fused_attention_report(parts: Parts) -> dict[str, bool]:
    def fused(blocks: Sequence[nn.Module]) -> bool:
        return all(bool(getattr(b.attn, "fused_attn", False)) for b in blocks)

    out = {f"teacher_{t.name}": fused(t.vit.blocks) for t in parts.teachers}
    out["student"] = fused(parts.student.blocks)
    out["decoder"] = fused(parts.decoder.blocks)
    return out


# --------------------------------------------------------------------------------------- table
def _fmt(v: Any, nd: int = 1) -> str:
    """Numbers for the table: ``nd`` decimals from 10 up, three significant digits below."""
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.{nd}f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def render_table(rows: list[dict[str, Any]], title: str) -> str:
    cols = ["variant", "data", "batch", "img_per_s", "ms_per_step", "ms_per_step_median", "peak_mem_mib", "gflop_per_img",
            "tflops", "mfu", "b_over_a", "e2e_over_model", "b_over_a_median", "e2e_over_model_median", "status"]
    heads = ["variant", "data", "B", "img/s", "ms/step", "median ms", "peak MiB", "GFLOP/img", "TFLOP/s", "MFU %", "b/a",
             "e2e/model", "b/a med", "e2e/m med", "status"]

    def cell(r: dict[str, Any], c: str) -> str:
        v = r.get(c)
        if c == "mfu":
            return _fmt(None if v is None else 100 * v, 1)
        return _fmt(v, 1)

    body = [[cell(r, c) for c in cols] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table

        t = Table(title=title)
        for h in heads:
            t.add_column(h, justify="left" if h in ("variant", "data", "status") else "right")
        for line in body:
            t.add_row(*line)
        buf = io.StringIO()
        Console(file=buf, width=200, force_terminal=False, color_system=None).print(t)
        return buf.getvalue()
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(heads, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
        return "\n".join(lines) + "\n"


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    atomic_write_text(buf.getvalue(), out / "benchmark_distill.csv")
    atomic_write_json(dict(meta=meta, rows=rows), out / "benchmark_distill.json")


def _fill_ratios(rows: list[dict[str, Any]]) -> None:
    """(b)/(a) against the naive row of the same batch and data path (``e2e`` for the GPU-decode
    rows), end-to-end / model-only against the same variant; from the mean and the median step."""
    ok = {(r["variant"], r["data"], r["batch"]): r for r in rows if r["status"] == "ok"}
    for r in rows:
        for k in ("b_over_a", "e2e_over_model", "b_over_a_median", "e2e_over_model_median"):
            r[k] = None
        if r["status"] != "ok":
            continue
        refs = {}
        if r["variant"] != "naive":
            refs["b_over_a"] = ok.get(("naive", r["data"] if r["data"] != "e2e-gpudecode" else "e2e", r["batch"]))
        if r["data"] != "model":
            refs["e2e_over_model"] = ok.get((r["variant"], "model", r["batch"]))
        for k, ref in refs.items():
            if ref:
                r[k] = r["img_per_s"] / ref["img_per_s"]
                r[k + "_median"] = r["img_per_s_median"] / ref["img_per_s_median"]


# ---------------------------------------------------------------------------------------- main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, default=None, help="one batch size (same as --batches N)")
    ap.add_argument("--batches", default=None, help="comma-separated batch sizes (default 64,128,256 on CUDA, 16 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per model-only row (default 10 CUDA, 3 CPU)")
    ap.add_argument("--e2e-steps", type=int, default=None,
                    help="timed steps per end-to-end row (default 2x --steps); their warm-up adds workers x prefetch steps")
    ap.add_argument("--rounds", type=int, default=None,
                    help="interleaved rounds per batch size: every row runs --steps steps per round (default 1 CUDA, 3 CPU)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 3 CUDA, 1 CPU)")
    ap.add_argument("--data", type=Path, default=None,
                    help="ImageFolder root with a train/ split (default: make the demo photos under --out)")
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
    ap.add_argument("--no-gpu-decode", action="store_true", help="skip the e2e-gpudecode rows (CUDA)")
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
        raise SystemExit(f"{option}: expected comma-separated integers, got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise SystemExit(f"{option}: expected positive batch sizes, got {text!r}")
    return vals


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available")
    cuda = device.type == "cuda"
    preset_name = "tiny" if args.tiny else "small" if args.small else "full"
    preset = PRESETS[preset_name]
    batches = _ints(args.batches, "--batches") if args.batches else [args.batch] if args.batch else ([128, 256, 512] if cuda else [16])
    compile_batches = _ints(args.compile_batches, "--compile-batches") if args.compile_batches else batches
    steps = args.steps or (10 if cuda else 3)
    e2e_steps = args.e2e_steps or 2 * steps
    rounds = args.rounds or (1 if cuda else 3)
    warmup = args.warmup if args.warmup is not None else (3 if cuda else 1)
    workers = args.workers if args.workers is not None else max(1, (os.cpu_count() or 2) - 1)
    variants = ["naive", "shipped"] + (["shipped+bf16"] if not cuda and not args.no_cpu_bf16 else [])
    if args.variants:
        variants = list(dict.fromkeys(v.strip() for v in args.variants.split(",") if v.strip()))
    if args.compile and "shipped+compile" not in variants:
        variants.append("shipped+compile")
    flags_of: dict[str, frozenset[str]] = {}
    for v in variants:
        try:
            flags_of[v] = parse_variant(v)[1]
        except ValueError as e:
            raise SystemExit(f"--variants: {e}") from None
        if cuda and "bf16" in flags_of[v]:
            raise SystemExit(f"--variants: {v}: +bf16 is the CPU's autocast; on CUDA every shipped row runs under "
                             "bf16 autocast already (use +bf16t for bf16 teachers)")
    e2e_variants = variants
    if args.e2e_variants:
        e2e_variants = [v.strip() for v in args.e2e_variants.split(",") if v.strip()]
        if set(e2e_variants) - set(variants):
            raise SystemExit(f"--e2e-variants: {sorted(set(e2e_variants) - set(variants))} not among --variants {variants}")
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.teachers_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="comad_bench_teachers_")
        teachers_dir = Path(tmp.name)
    else:
        teachers_dir = args.teachers_dir
        teachers_dir.mkdir(parents=True, exist_ok=True)

    data = args.data
    if not args.no_e2e and data is None:
        from comad.data import make_demo_imagefolder

        side = max(64, int(preset["img_size"] * 1.4))
        data = make_demo_imagefolder(out / f"demo_photos_{side}", img_size=side, n_per_image=16, n_val_per_image=0)
    if data is not None and not (Path(data) / "train").is_dir():
        raise SystemExit(f"--data {data}: expected an ImageFolder root with a train/ folder")

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the naive step
    torch.backends.cudnn.allow_tf32 = False
    if cuda:
        torch.backends.cudnn.benchmark = True  # the runner's env_cfg
    t_setup = time.perf_counter()
    ckpts = write_teachers(preset, teachers_dir)
    model, parts = build_parts(preset, ckpts, device)
    _, why_missing = _load_distiller()
    setup_s = time.perf_counter() - t_setup

    peak_dtype = torch.bfloat16 if cuda else torch.float32
    peak = measure_matmul_peak(device, peak_dtype, preset["matmul_n"])
    peaks = {"bf16" if cuda else "fp32": peak}
    if not cuda and any(f & {"bf16", "bf16t"} for f in flags_of.values()):
        peaks["bf16"] = measure_matmul_peak(device, torch.bfloat16, preset["matmul_n"])
    f_naive, f_fast = flops_for(parts, naive=True), flops_for(parts, naive=False)
    meta: dict[str, Any] = dict(
        device=torch.cuda.get_device_name(device) if cuda else (platform.processor() or platform.machine()),
        cpu_count=os.cpu_count(), torch=torch.__version__, python=platform.python_version(), preset=preset_name,
        config={k: (list(v) if isinstance(v, tuple) else v) for k, v in preset.items()},
        batches=batches, steps=steps, e2e_steps=e2e_steps, rounds=rounds, warmup=warmup, workers=workers, prefetch=args.prefetch,
        data=str(data) if data else None, matmul_peak=peaks,
        mfu_denominator=f"measured {'bf16' if cuda else 'fp32'} matmul peak ({peak['tflops']:.2f} TFLOP/s, n={peak['n']})",
        flops_per_image=dict(naive=f_naive, shipped=f_fast), fused_attention=fused_attention_report(parts),
        distiller_available=model is not None, distiller_missing_reason=why_missing, setup_s=setup_s,
        tf32=False, amp_shipped="bf16" if cuda else "off (the runner enables bf16 autocast on CUDA only)",
    )
    try:
        import timm

        meta["timm"] = timm.__version__
    except ImportError:
        pass
    print(f"device {meta['device']}: {meta['mfu_denominator']}; analytic GFLOP/img naive "
          f"{f_naive['total'] / 1e9:.2f}, shipped {f_fast['total'] / 1e9:.2f}; fused attention {meta['fused_attention']}",
          flush=True)
    if why_missing:
        print(f"WARNING: {why_missing}; the shipped rows are reported as unavailable", file=sys.stderr, flush=True)

    naive = NaiveStep(parts)
    shipped = ShippedStep(model, torch.bfloat16 if cuda else None) if model is not None else None
    shipped_bf16 = ShippedStep(model, torch.bfloat16) if model is not None and not cuda else None
    rows: list[dict[str, Any]] = []
    datas = ["model"] + ([] if args.no_e2e else ["e2e"] + (["e2e-gpudecode"] if cuda and not args.no_gpu_decode else []))

    def finish(row: dict[str, Any], flops: dict[str, float], n_total: int, res: dict[str, Any]) -> None:
        batch = row["batch"]
        row["steps"] = n_total
        row["img_per_s"] = batch * n_total / (res["total_ms"] / 1e3)
        row["ms_per_step"] = res["total_ms"] / n_total
        row["ms_per_step_median"] = statistics.median(res["per_step_ms"])
        row["img_per_s_median"] = batch / (row["ms_per_step_median"] / 1e3)
        row["peak_mem_mib"] = res["peak_mem_mib"]
        row["tflops"] = flops["total"] * row["img_per_s"] / 1e12
        flags = flags_of[row["variant"]]
        cpu_bf16 = not cuda and bool(flags & {"bf16", "bf16t"})
        row["mfu"] = row["tflops"] / (peaks["bf16"]["tflops"] if cpu_bf16 else peak["tflops"])
        row["per_step_ms"] = res["per_step_ms"]
        row["warmup_s"] = res["warmup_s"]
        notes = (["CPU bf16 autocast"] if "bf16" in flags else []) + (["bf16 teachers"] if "bf16t" in flags else [])
        notes += ["MFU vs the bf16 matmul peak"] if cpu_bf16 else []
        notes += [f"warm-up incl. compile {res['warmup_s']:.1f} s"] if "compile" in flags else []
        row["note"] = "; ".join(notes)

    def run_group(specs: list[tuple[str, str, int]]) -> None:
        """Time the rows of ``specs`` in ``rounds`` interleaved rounds (each round: every row in
        turn), so slow drifts of a shared machine hit every row alike; one row per spec."""
        state = []
        for variant, data_kind, batch in specs:
            row: dict[str, Any] = dict(row=len(rows) + len(state), variant=variant, data=data_kind, batch=batch,
                                       status="ok", note="")
            flops = f_naive if variant == "naive" else f_fast
            row["gflop_per_img"] = flops["total"] / 1e9
            n_steps = steps if data_kind == "model" else e2e_steps
            # The workers start together and deliver their first batches at once (up to
            # workers x prefetch of them): an end-to-end row whose step could outrun the loader
            # warms up through that burst, so its timed steps see the steady state.
            burst = workers * args.prefetch if data_kind != "model" and variant != "naive" else 0
            state.append(dict(row=row, flops=flops, n=n_steps, it=None, res=None, done=0, warm=warmup + burst))
        for r in range(rounds):
            for st in state:
                row = st["row"]
                if row["status"] != "ok":
                    continue
                variant, data_kind, batch = row["variant"], row["data"], row["batch"]
                label = f"{variant:16s} {data_kind:14s} B={batch:<4d} round {r + 1}/{rounds}"
                try:
                    if variant != "naive" and model is None:
                        raise RuntimeError(why_missing)
                    flags = flags_of[variant]
                    step = naive if variant == "naive" else shipped_bf16 if "bf16" in flags else shipped
                    if st["it"] is None:
                        if data_kind == "model":
                            st["it"] = synthetic_batches(batch, preset["img_size"], device, seed=batch)
                        else:
                            st["it"] = build_loader("gpu" if data_kind == "e2e-gpudecode" else "cpu", Path(data),
                                                    preset["img_size"], batch, st["warm"] + st["n"] * rounds, workers,
                                                    device, args.prefetch)
                    scope = configured(model, flags) if variant != "naive" else contextlib.nullcontext()
                    with scope:
                        res = time_steps(step, st["it"], st["warm"] if r == 0 else 0, st["n"], device,
                                         start=st["done"] + (0 if r == 0 else st["warm"]))
                    st["done"] += st["n"]
                    prev = st["res"]
                    if prev is not None:
                        res = dict(total_ms=prev["total_ms"] + res["total_ms"], per_step_ms=prev["per_step_ms"] + res["per_step_ms"],
                                   warmup_s=prev["warmup_s"], peak_mem_mib=max(prev["peak_mem_mib"], res["peak_mem_mib"]))
                    st["res"] = res
                    finish(row, st["flops"], st["done"], res)
                    print(f"{label} {row['img_per_s']:10.1f} img/s {row['ms_per_step']:9.2f} ms/step "
                          f"{row['tflops']:8.3f} TFLOP/s (cumulative)", flush=True)
                except Exception as e:  # recorded in the table and JSON, and printed in full
                    row["status"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''}"
                    row["traceback"] = traceback.format_exc()
                    print(f"{label} FAILED\n{row['traceback']}", file=sys.stderr, flush=True)
                finally:
                    if r == rounds - 1 or row["status"] != "ok":
                        if st["it"] is not None and hasattr(st["it"], "close"):
                            st["it"].close()  # stops the loader's workers
                        st["it"] = None
                    if cuda:
                        torch.cuda.empty_cache()
                write_outputs(out, rows + [s["row"] for s in state], meta)
        rows.extend(s["row"] for s in state)
        _fill_ratios(rows)
        write_outputs(out, rows, meta)

    title = (f"CoMAD step throughput, {meta['device']} ({preset_name} config, img {preset['img_size']}px); "
             f"MFU vs {meta['mfu_denominator']}")

    def publish(final: bool) -> None:
        write_outputs(out, rows, meta)
        table = render_table(rows, title)
        atomic_write_text(table, out / "benchmark_distill.txt")
        if final:
            print(table)

    def specs(vs: list[str], batch: int) -> list[tuple[str, str, int]]:
        return [(v, d, batch) for d in datas for v in vs
                if d == "model" or (v in e2e_variants and not (v == "naive" and d == "e2e-gpudecode"))]

    eager = [v for v in variants if "compile" not in flags_of[v]]
    compiled = [v for v in variants if "compile" in flags_of[v]]
    for batch in batches:
        run_group(specs(eager, batch))
        publish(False)
    # diagnostics of the shipped step (before the compile rows, which may be cut by a time limit):
    # host syncs (CUDA) and that the teachers hold no trainable parameter and no gradient
    if model is not None:
        try:
            imgs = next(synthetic_batches(batches[0], preset["img_size"], device))
            if cuda:
                meta["host_syncs_in_shipped_step"] = sync_audit(shipped, imgs, 10_000)
            meta["teacher_params_trainable_or_with_grad"] = sum(p.grad is not None or p.requires_grad
                                                                for t in model.teachers for p in t.parameters())
        except Exception:  # recorded; the rows above stand
            meta["diagnostics_error"] = traceback.format_exc()
            print(meta["diagnostics_error"], file=sys.stderr, flush=True)
    publish(False)

    def profile(vs: list[str]) -> None:
        if not args.profile or model is None:
            return
        prof = meta.setdefault("profile", {})
        for v in vs:
            with configured(model, flags_of[v]):
                try:
                    prof[v] = profile_step(shipped_bf16 if "bf16" in flags_of[v] else shipped, max(batches),
                                           preset["img_size"], device, phases="compile" not in flags_of[v])
                except Exception:
                    prof[v] = dict(error=traceback.format_exc())
            publish(False)
        print(render_profile({v: prof[v] for v in vs}), flush=True)

    profile([v for v in eager if v != "naive"])
    for batch in compile_batches if compiled else []:
        run_group(specs(compiled, batch))
        publish(False)
    profile(compiled)
    publish(True)
    if meta.get("host_syncs_in_shipped_step"):
        print("host syncs in one shipped step:\n  " + "\n  ".join(meta["host_syncs_in_shipped_step"]))
    print(f"wrote {out / 'benchmark_distill.csv'}, {out / 'benchmark_distill.json'}, {out / 'benchmark_distill.txt'}")
    if model is None:
        return 3
    return 0 if all(r["status"] == "ok" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
