"""Build the mmengine Runner of a distillation config for this process.

Resolves what a config cannot know in advance: the world size (so iterations and lr follow
the effective batch), the device (bf16 AMP and the NCCL backend only with CUDA, said in the
log), the newest checkpoint to resume from, and, for the demo, the teacher files.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

from .schedule import resolve_schedule

__all__ = ["build_runner", "latest_checkpoint", "prepare_demo_teachers"]


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    """The ``iter_N.pth`` with the largest N in ``work_dir`` (written atomically, so complete)."""
    found = []
    for p in Path(work_dir).glob("iter_*.pth"):
        m = re.fullmatch(r"iter_(\d+)\.pth", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def prepare_demo_teachers(demo: dict[str, Any]) -> None:
    """Write the demo's small random teachers in their official layouts (once)."""
    from ..teachers.synthetic import write_checkpoint

    folder = Path(demo["teacher_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    for i, (_name, fmt, filename) in enumerate(demo["teachers"]):
        dst = folder / filename
        if dst.exists():
            continue
        tmp = folder / f".{filename}.{os.getpid()}.tmp"
        write_checkpoint(fmt, tmp, seed=100 + i, **demo["teacher_arch"])
        os.replace(tmp, dst)


def _world_size(launcher: str) -> int:
    if launcher == "slurm":
        return int(os.environ.get("SLURM_NTASKS", "1"))
    if launcher == "pytorch":
        return int(os.environ.get("WORLD_SIZE", "1"))
    return 1


def build_runner(cfg: Config, work_dir: str | None = None, resume: bool = False, launcher: str = "none") -> Runner:
    """Finish ``cfg`` for this process and build the Runner (see the module docstring)."""
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(cfg.filename).stem)
    demo = cfg.get("demo")
    if demo:
        print_log("=" * 64 + "\nDEMO RUN: small random teachers in the official MAE / iBOT / MoCo v3 layouts, real photos "
                  "from scikit-image / scikit-learn, 64 px. It shows the pipeline working, not a result.\n" + "=" * 64,
                  logger="current")
        prepare_demo_teachers(demo)

    cuda = torch.cuda.is_available()
    amp = cfg.get("amp", "auto")
    if amp not in ("auto", "on", "off"):
        raise ValueError(f"config key amp must be 'auto', 'on' or 'off', got {amp!r}")
    if amp == "on" and not cuda:
        raise ValueError("amp='on' needs a CUDA device; none is available (use amp='auto' or 'off')")
    use_amp = cuda and amp != "off"
    cfg.optim_wrapper.type = "AmpOptimWrapper" if use_amp else "OptimWrapper"
    if use_amp:
        cfg.optim_wrapper.dtype = "bfloat16"
    accum = int(cfg.get("accumulation", 1))
    cfg.optim_wrapper.accumulative_counts = accum
    if not cuda and launcher != "none":
        cfg.env_cfg.dist_cfg = dict(backend="gloo")

    world = _world_size(launcher)
    sched = resolve_schedule(dict(cfg.schedule), cfg.train_dataloader.batch_size, world, accum)
    cfg.train_cfg.max_iters = sched["max_iters"]
    cfg.optim_wrapper.optimizer.lr = sched["lr"]
    warm, cosine = cfg.param_scheduler
    warm.end = sched["warmup_iters"]
    cosine.update(begin=sched["warmup_iters"], end=sched["max_iters"], eta_min=sched["min_lr"])
    # a schedule cut shorter than its warm-up (smoke runs) is all warm-up
    cfg.param_scheduler = [s for s in (warm, cosine) if s.end > s.begin]

    run_info = dict(sched, amp="bf16" if use_amp else "fp32", demo=bool(demo), launcher=launcher)
    for hook in cfg.get("custom_hooks", []):
        if hook.get("type") == "ComadRunHook":
            hook["run_info"] = dict(hook.get("run_info") or {}, **run_info)
    print_log(f"schedule: effective batch {sched['effective_batch']} ({world} process(es) x {sched['batch_size']} x "
              f"{accum} accumulation), lr {sched['lr']:.3g}, {sched['max_iters']} iterations, "
              f"{sched['warmup_iters']} warm-up; AMP: {run_info['amp']}"
              + ("" if cuda else " (no CUDA device)"), logger="current")

    if resume:
        ckpt = latest_checkpoint(cfg.work_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint (iter_*.pth) in {cfg.work_dir}; start without --resume")
        cfg.resume = True
        cfg.load_from = str(ckpt)
        print_log(f"resuming from {ckpt}", logger="current")
    return Runner.from_cfg(cfg)
