"""ImageNet-1K end-to-end fine-tuning of a student (the protocol behind CoMAD's 75.4).

MAE / BEiT recipe from timm's building blocks: ``create_transform`` (RandAugment
'rand-m9-mstd0.5-inc1', random erasing 0.25), ``Mixup`` (mixup 0.8, cutmix 1.0, label
smoothing 0.1) with ``SoftTargetCrossEntropy``, ``create_optimizer_v2('adamw', layer_decay=0.75)``,
a per-step cosine schedule with warm-up (``create_scheduler_v2``), drop path 0.1, optional
``ModelEmaV3``, bf16 autocast (or fp16 with a ``GradScaler``). DDP from the torchrun
environment; ``lr = blr * effective_batch / 256``.

Resumable through the shared epoch loop (:mod:`transfer.imagenet.loop`): ``<work_dir>/checkpoint_last.pth``
holds model / optimizer / scheduler / scaler / EMA / position / every RNG state, loadable with
``weights_only=True``; with ``num_workers=0`` a resumed run is bit-identical to an uninterrupted one.

At the end the fine-tuned classifier is returned as a release (:func:`finetune_release`,
published by the task layer into ``<work_dir>/release/``): ``<name>-<sha8>.pth`` with the weights
and plain meta, and ``<name>.json`` that builds it in stock timm::

    cfg = json.load(open("<name>.json"))
    model = timm.models.vision_transformer.VisionTransformer(**cfg["model_args"])
    model.load_state_dict(torch.load("<name>-<sha8>.pth", weights_only=True)["state_dict"])
    transform = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=cfg["pretrained_cfg"]))
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import json

import torch
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.utils import ModelEmaV3
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from comad.checkpoint import content_sha256
from comad.release import Release
from .features import _autocast
from .linear_probe import _accuracy_counts, _finish_counts, build_scheduler
from .loop import EpochLoop, Learner
from .env import DistEnv
from .loop import RunLog
from comad.checkpoint import load_vit

__all__ = ["finetune_transforms", "build_finetune_model", "evaluate_classifier", "finetune", "finetune_release"]


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
    loaded = load_vit(student, img_size=cfg.img_size, num_classes=num_classes, global_pool=pool,
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


def _mixup_and_criterion(mix: Any, num_classes: int) -> tuple[Mixup | None, nn.Module]:
    """timm ``Mixup`` + ``SoftTargetCrossEntropy`` when mixup / cutmix are on, else (label-smoothed) cross-entropy."""
    if mix.mixup_alpha > 0 or mix.cutmix_alpha > 0:
        mixup = Mixup(mixup_alpha=mix.mixup_alpha, cutmix_alpha=mix.cutmix_alpha, prob=mix.prob, switch_prob=mix.switch_prob,
                      mode=mix.mode, label_smoothing=mix.label_smoothing, num_classes=num_classes)
        return mixup, SoftTargetCrossEntropy()
    if mix.label_smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=mix.label_smoothing)
    return None, nn.CrossEntropyLoss()


def _finetune_learner(model: nn.Module, num_classes: int, cfg: Any, env: DistEnv, steps_per_epoch: int,
                      lr: float) -> Learner:
    """AdamW with layer decay, the per-step cosine schedule, mixup, AMP scaler, EMA, DDP around ``model``."""
    device = env.device
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
        if env.distributed else None
    opt = create_optimizer_v2(model, "adamw", lr=lr, weight_decay=cfg.weight_decay, layer_decay=cfg.layer_decay,
                              betas=tuple(cfg.betas))
    sched = build_scheduler(opt, cfg.epochs, cfg.warmup_epochs, steps_per_epoch, cfg.min_lr, cfg.warmup_lr)
    mixup, criterion = _mixup_and_criterion(cfg.mixup, num_classes)
    amp = cfg.get("amp")
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16" and device.type == "cuda")
    ema = ModelEmaV3(model, decay=cfg.model_ema.decay) if cfg.model_ema.enable else None
    net = ddp if ddp is not None else model

    def loss(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        images, target = images.to(device, non_blocking=True), target.to(device, non_blocking=True)
        if mixup is not None:
            images, target = mixup(images, target)
        with _autocast(device, amp):
            return criterion(net(images), target)

    return Learner(model, loss, opt, sched, scaler=scaler, ema=ema, clip_grad=cfg.get("clip_grad"), ddp=ddp)


def finetune(student: str | Path, train_set: Dataset, val_set: Dataset, num_classes: int, cfg: Any, env: DistEnv,
             work_dir: str | Path, seed: int, eff_batch: int, max_iters: int | None = None, log: RunLog | None = None,
             resume_key: dict[str, Any] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """Fine-tune (resumable, :class:`~transfer.imagenet.loop.EpochLoop`), evaluate; returns (metrics, info incl. the load report)."""
    torch.manual_seed(seed)  # same initial head on every rank
    loaded = build_finetune_model(student, num_classes, cfg)
    model = loaded.model.to(env.device)
    loop = EpochLoop(train_set, cfg, env, seed, "fine-tune")
    lr = cfg.blr * eff_batch / 256
    learner = _finetune_learner(model, num_classes, cfg, env, loop.steps_per_epoch, lr)
    bs, amp = int(cfg.batch_size), cfg.get("amp")

    def evaluate(epoch: int, step: int) -> None:  # every eval_interval epochs (the final one follows the loop)
        if cfg.eval_interval and epoch % cfg.eval_interval == 0:
            m = evaluate_classifier(model, val_set, env, bs, cfg.num_workers, amp)
            if log is not None:
                log.scalars(dict(top1=m["top1"], top5=m["top5"], epoch=epoch), step)
                log.info(f"epoch {epoch}: top1 {m['top1']:.2f} top5 {m['top5']:.2f}")

    step, epoch = loop.run(learner, work_dir, max_iters, log, resume_key, on_epoch_end=evaluate)
    metrics = evaluate_classifier(model, val_set, env, bs, cfg.num_workers, amp)
    if learner.ema is not None:
        m_ema = evaluate_classifier(learner.ema.module, val_set, env, bs, cfg.num_workers, amp)
        metrics.update(top1_ema=m_ema["top1"], top5_ema=m_ema["top5"])
    if log is not None:
        log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"], epoch=epoch), step)
        log.info(f"fine-tune done: {step} steps, top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
    info = dict(iters=step, epochs_done=epoch, lr=lr, steps_per_epoch=loop.steps_per_epoch, load_report=loaded.report,
                release=finetune_release(loaded, cfg, num_classes, getattr(val_set, "classes", None), student, step))
    return metrics, info


def finetune_release(loaded: Any, cfg: Any, num_classes: int, classes: list[str] | None, student: str | Path,
                     step: int) -> Release:
    """The fine-tuned classifier ``loaded.model`` as a :class:`~comad.release.Release` with a timm config (.json)."""
    from ..metrics_io import student_name

    model = loaded.model
    size = int(cfg.img_size)
    args = {k: v for k, v in loaded.arch.items() if k != "num_positions"}  # as comad.checkpoint.build_vit builds it
    args.update(img_size=size, num_heads=int(model.blocks[0].attn.num_heads), num_classes=int(num_classes),
                global_pool=model.global_pool)
    aug = cfg.aug
    pretrained_cfg = dict(input_size=[3, size, size], interpolation=aug.interpolation, mean=list(cfg.mean),
                          std=list(cfg.std), crop_pct=aug.crop_pct, crop_mode="center", num_classes=int(num_classes),
                          first_conv="patch_embed.proj", classifier="head")
    name = f"{Path(cfg.config_path).stem}_{student_name(student)}"
    config = dict(architecture="timm.models.vision_transformer.VisionTransformer", model_args=args,
                  pretrained_cfg=pretrained_cfg, classes=list(classes) if classes else None, weights=f"{name}-<sha8>.pth")
    meta = dict(dataset_meta=dict(classes=list(classes) if classes else None), task="imagenet-ft", iter=int(step),
                seed=int(cfg.seed), config=f"{name}.json", benchmark_config=str(cfg.config_path), student=str(student),
                student_sha256=content_sha256(student), arch=args)
    return Release(name=name, state_dict=model.state_dict(), meta=meta,
                   config_text=json.dumps(config, indent=2, sort_keys=True) + "\n", config_suffix=".json")
