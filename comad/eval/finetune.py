"""ImageNet-1K end-to-end fine-tuning of a student (the protocol behind CoMAD's 75.4).

MAE / BEiT recipe from timm's building blocks: ``create_transform`` (RandAugment
'rand-m9-mstd0.5-inc1', random erasing 0.25), ``Mixup`` (mixup 0.8, cutmix 1.0, label
smoothing 0.1) with ``SoftTargetCrossEntropy``, ``create_optimizer_v2('adamw', layer_decay=0.75)``,
a per-step cosine schedule with warm-up (``create_scheduler_v2``), drop path 0.1, optional
``ModelEmaV3``, bf16 autocast (or fp16 with a ``GradScaler``). DDP from the torchrun
environment; ``lr = blr * effective_batch / 256``.

Resumable: ``<work_dir>/checkpoint_last.pth`` (written atomically at every epoch end and when
``max_iters`` stops the run) holds model / optimizer / scheduler / scaler / EMA / position
(epoch, micro-batch within the epoch, optimizer step) / every RNG state, as tensors and
primitive types only, so :func:`comad.io.safe_torch_load` (``weights_only=True``) reads it.
With ``num_workers=0`` a resumed run is bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib

from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .features import _autocast
from .linear_probe import _accuracy_counts, _finish_counts, build_scheduler
from .runtime import (DistEnv, RunLog, SkipSampler, resume_state, rng_state, save_checkpoint, seed_everything,
                      set_rng_state)
from .student import load_student

__all__ = ["finetune_transforms", "build_finetune_model", "evaluate_classifier", "finetune"]

CHECKPOINT = "checkpoint_last.pth"


def finetune_transforms(cfg: Any):
    """(train, eval) transforms of the fine-tune recipe (timm ``create_transform``)."""
    from timm.data import create_transform

    aug = cfg.aug
    common = dict(input_size=cfg.img_size, interpolation=aug.interpolation, mean=tuple(cfg.mean), std=tuple(cfg.std))
    train = create_transform(is_training=True, auto_augment=aug.auto_augment, color_jitter=aug.color_jitter,
                             re_prob=aug.re_prob, re_mode=aug.re_mode, re_count=aug.re_count, scale=tuple(aug.scale), **common)
    ev = create_transform(is_training=False, crop_pct=aug.crop_pct, **common)
    _posterize_zero_bits_compat(train)
    return train, ev


def _posterize_black(img, bits_to_keep: int, **_: Any):
    """timm's posterize with Pillow < 13 semantics: 0 bits kept gives a black image (Pillow 13 raises)."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def _posterize_zero_bits_compat(transform: Any) -> int:
    """Make the Posterize ops of a timm RandAugment accept 0 bits; returns how many ops were changed.

    RandAugment 'rand-m9-mstd0.5-inc1' clips sampled magnitudes to 10, where
    ``PosterizeIncreasing`` keeps 0 bits; Pillow 13's ``ImageOps.posterize`` refuses 0 bits
    (older Pillow returned a black image, the behaviour the recipe was tuned with). Only the
    ops of this transform instance are changed.
    """
    from timm.data.auto_augment import RandAugment

    changed = 0
    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize_black
                    changed += 1
    return changed


def build_finetune_model(student: str | Path, num_classes: int, cfg: Any):
    """Student encoder + a fresh classifier (head ~ N(0, head_init_std)); returns ``LoadedStudent``."""
    pool = {"mean": "avg", "cls": "token"}.get(cfg.pooling)
    if pool is None:
        raise ValueError(f"fine-tune pooling {cfg.pooling!r}: expected 'mean' (MAE: avg + fc_norm) or 'cls'")
    loaded = load_student(student, img_size=cfg.img_size, num_classes=num_classes, global_pool=pool,
                          drop_path_rate=cfg.drop_path)
    nn.init.trunc_normal_(loaded.model.head.weight, std=cfg.head_init_std)
    nn.init.zeros_(loaded.model.head.bias)
    return loaded


@torch.no_grad()
def evaluate_classifier(model: nn.Module, val_set: Dataset, env: DistEnv, batch_size: int, num_workers: int = 0,
                        amp: str | None = None) -> dict[str, float]:
    """Top-1 / top-5 (percent) over the whole val set, sharded over ranks without padding."""
    was = model.training
    model.eval()
    idx = list(range(env.rank, len(val_set), env.world_size))
    loader = DataLoader(Subset(val_set, idx), batch_size=batch_size, shuffle=False, num_workers=num_workers)
    counts = torch.zeros(3, dtype=torch.float64)
    for images, target in loader:
        with _autocast(env.device, amp):
            logits = model(images.to(env.device))
        counts += _accuracy_counts(logits.float(), target.to(env.device))
    model.train(was)
    return _finish_counts(counts, env)


def finetune(student: str | Path, train_set: Dataset, val_set: Dataset, num_classes: int, cfg: Any, env: DistEnv,
             work_dir: str | Path, seed: int, eff_batch: int, max_iters: int | None = None, log: RunLog | None = None,
             resume_key: dict[str, Any] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Fine-tune, evaluate, checkpoint; returns (metrics, info incl. the load report)."""
    work_dir = Path(work_dir)
    device = env.device
    torch.manual_seed(seed)  # same initial head on every rank
    loaded = build_finetune_model(student, num_classes, cfg)
    model = loaded.model.to(device)
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if env.distributed else model
    bs, accum = int(cfg.batch_size), int(cfg.get("accum_iter", 1))
    base = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed, drop_last=True)
    sampler = SkipSampler(base)
    loader = DataLoader(train_set, batch_size=bs, sampler=sampler, num_workers=cfg.num_workers, drop_last=True,
                        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(seed))
    steps_per_epoch = (len(base) // bs) // accum
    if steps_per_epoch < 1:
        raise ValueError(f"fine-tune: {len(base)} samples per process < batch_size {bs} x accum_iter {accum}")
    lr = cfg.blr * eff_batch / 256
    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                              betas=tuple(cfg.betas))
    sched = build_scheduler(opt, cfg.epochs, cfg.warmup_epochs, steps_per_epoch, cfg.min_lr, cfg.warmup_lr)
    mix = cfg.mixup
    mixup = None
    if mix.mixup_alpha > 0 or mix.cutmix_alpha > 0:
        mixup = Mixup(mixup_alpha=mix.mixup_alpha, cutmix_alpha=mix.cutmix_alpha, prob=mix.prob, switch_prob=mix.switch_prob,
                      mode=mix.mode, label_smoothing=mix.label_smoothing, num_classes=num_classes)
        criterion: nn.Module = SoftTargetCrossEntropy()
    elif mix.label_smoothing > 0:
        criterion = LabelSmoothingCrossEntropy(smoothing=mix.label_smoothing)
    else:
        criterion = nn.CrossEntropyLoss()
    amp = cfg.get("amp")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
    ema = ModelEmaV3(model, decay=cfg.model_ema.decay) if cfg.model_ema.enable else None
    start_epoch, skip, step = 0, 0, 0
    ckpt_path = work_dir / CHECKPOINT
    state = resume_state(ckpt_path, cfg, resume_key)
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None:
            if "ema" not in state:
                raise ValueError(f"checkpoint {ckpt_path}: has no 'ema' state but model_ema.enable is set")
            ema.load_state_dict(state["ema"])
        start_epoch, skip, step = state["epoch"], state["iter_in_epoch"], state["step"]
        set_rng_state(state["rng"])
        if log is not None:
            log.info(f"resumed from {ckpt_path}: epoch {start_epoch}, micro-batch {skip}, step {step}")
    else:
        seed_everything(seed + env.rank)  # python, numpy, torch: augmentations, mixup, drop path

    def checkpoint(epoch: int, iter_in_epoch: int) -> None:
        if env.is_main:
            state = dict(model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(),
                         scaler=scaler.state_dict(), epoch=epoch, iter_in_epoch=iter_in_epoch, step=step,
                         rng=rng_state(), key=resume_key)
            if ema is not None:
                state["ema"] = ema.state_dict()
            save_checkpoint(ckpt_path, state)

    batches_per_epoch = steps_per_epoch * accum
    stop = max_iters is not None and step >= max_iters
    epoch = start_epoch
    metrics: dict[str, float] = {}
    while epoch < cfg.epochs and not stop:
        sampler.set_epoch(epoch, skip=skip * bs)
        model.train()
        i = skip
        for images, target in loader:
            if i >= batches_per_epoch:
                break
            images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
            if mixup is not None:
                images, target = mixup(images, target)
            last_micro = (i + 1) % accum == 0
            sync = ddp.no_sync() if env.distributed and not last_micro else contextlib.nullcontext()
            with sync:
                with _autocast(device, amp):
                    loss = criterion(ddp(images), target)
                scaler.scale(loss / accum).backward()
            i += 1
            if not last_micro:
                continue
            if cfg.get("clip_grad"):
                scaler.unscale_(opt)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            step += 1
            sched.step_update(step)
            if ema is not None:
                ema.update(model, step=step)
            if log is not None and (step % cfg.log_interval == 0 or step == 1):
                lr_now = max(g["lr"] for g in opt.param_groups)
                log.scalars(dict(loss=loss.item(), lr=lr_now, epoch=epoch, iter=step), step)
            if max_iters is not None and step >= max_iters:
                stop = True
                break
        skip = 0
        if i >= batches_per_epoch:
            epoch, i = epoch + 1, 0
            if cfg.eval_interval and epoch % cfg.eval_interval == 0 and epoch < cfg.epochs and not stop:
                metrics = evaluate_classifier(model, val_set, env, bs, cfg.num_workers, amp)
                if log is not None:
                    log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"], epoch=epoch), step)
                    log.info(f"epoch {epoch}: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
        if stop or epoch >= cfg.epochs or epoch % cfg.checkpoint_interval == 0:
            checkpoint(epoch, i)
    metrics = evaluate_classifier(model, val_set, env, bs, cfg.num_workers, amp)
    if ema is not None:
        m_ema = evaluate_classifier(ema.module, val_set, env, bs, cfg.num_workers, amp)
        metrics.update(top1_ema=m_ema["top1"], top5_ema=m_ema["top5"])
    if log is not None:
        log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"], epoch=epoch), step)
        log.info(f"fine-tune done: {step} steps, top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
    info = dict(iters=step, epochs_done=epoch, lr=lr, steps_per_epoch=steps_per_epoch, load_report=loaded.report)
    return metrics, info
