"""ImageNet linear probes on a frozen student: MAE's online protocol and a cached-feature one.

Head (both): ``BatchNorm1d(D, affine=False, eps=1e-6)`` + ``Linear(D, C)`` (MAE's
``main_linprobe.py``: the BN only whitens the features, so the classifier stays linear),
trained with LARS (``timm.optim.Lars``, momentum 0.9, trust coefficient 0.001; LARS
adaptation on the weight matrix, none on the bias — as MAE's LARS, which skips 1-d params),
``lr = blr * effective_batch / 256``, linear warm-up then cosine (timm scheduler, per step).

- **online** (MAE): every step embeds augmented crops (RandomResizedCrop + flip) with the
  frozen backbone; DDP over the head; resumable from ``<work_dir>/checkpoint_last.pth`` (the
  epoch loop of the fine-tune, :mod:`transfer.imagenet.loop`).
- **cached**: features of centre crops are extracted once (:class:`~transfer.imagenet.features.FeatureCache`)
  and the head is trained on the cache; a single process.

After probing, :func:`~transfer.imagenet.features.assert_backbone_unchanged` checks the backbone.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from timm.data import create_transform
from timm.optim import Lars
from timm.scheduler import create_scheduler_v2
from timm.utils import accuracy
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

from .features import _autocast, assert_backbone_unchanged, backbone_snapshot, embed
from .loop import EpochLoop, Learner, log_step
from .env import DistEnv
from .loop import RunLog

__all__ = ["LinearProbeHead", "build_lars", "build_scheduler", "eval_transform", "probe_transforms", "train_head_on_features",
           "evaluate_head", "online_probe"]


class LinearProbeHead(nn.Module):
    """``BatchNorm1d(affine=False, eps=1e-6)`` (optional) + ``Linear``; weight ~ N(0, 0.01), bias 0."""

    def __init__(self, dim: int, num_classes: int, bn: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if bn else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x))


def build_lars(head: nn.Module, lr: float, weight_decay: float = 0.0, momentum: float = 0.9,
               trust_coeff: float = 0.001) -> Lars:
    """LARS with MAE's grouping: >1-d params adapted (and decayed), 1-d params plain SGD-momentum."""
    mats = [p for p in head.parameters() if p.requires_grad and p.ndim > 1]
    vecs = [p for p in head.parameters() if p.requires_grad and p.ndim <= 1]
    groups = [dict(params=mats, weight_decay=weight_decay, always_adapt=True)]
    if vecs:
        groups.append(dict(params=vecs, weight_decay=0.0, always_adapt=False))
    return Lars(groups, lr=lr, momentum=momentum, trust_coeff=trust_coeff)


def build_scheduler(optimizer: torch.optim.Optimizer, epochs: int, warmup_epochs: int, steps_per_epoch: int,
                    min_lr: float = 0.0, warmup_lr: float = 0.0):
    """timm cosine schedule per optimizer step: linear warm-up from ``warmup_lr``, then cosine to ``min_lr``
    over the remaining ``epochs - warmup_epochs`` (MAE's ``adjust_learning_rate``)."""
    if not 0 <= warmup_epochs < epochs:
        raise ValueError(f"schedule: warmup_epochs {warmup_epochs} must be >= 0 and < epochs {epochs}")
    sched, _ = create_scheduler_v2(optimizer, "cosine", num_epochs=epochs - warmup_epochs, warmup_epochs=warmup_epochs,
                                   min_lr=min_lr,
                                   warmup_lr=warmup_lr, warmup_prefix=True, step_on_epochs=False,
                                   updates_per_epoch=steps_per_epoch)
    return sched


def eval_transform(cfg: Any) -> Callable:
    """Resize to ``img_size / crop_pct`` + centre crop ``img_size`` + normalise (timm)."""
    return create_transform(input_size=cfg.img_size, is_training=False, crop_pct=cfg.crop_pct,
                            interpolation=cfg.interpolation, mean=tuple(cfg.mean), std=tuple(cfg.std))


def probe_transforms(cfg: Any) -> tuple[Callable, Callable]:
    """(train, eval) transforms: train = RandomResizedCrop + flip, or the eval transform when ``train_aug`` is None."""
    ev = eval_transform(cfg)
    if cfg.get("train_aug") is None:
        return ev, ev
    aug = cfg.train_aug
    tr = create_transform(input_size=cfg.img_size, is_training=True, scale=tuple(aug.scale), hflip=aug.hflip,
                          color_jitter=None, auto_augment=None, interpolation=cfg.interpolation,
                          mean=tuple(cfg.mean), std=tuple(cfg.std))
    return tr, ev


def _accuracy_counts(logits: Tensor, target: Tensor) -> Tensor:
    k5 = min(5, logits.shape[1])
    a1, a5 = accuracy(logits, target, topk=(1, k5))
    n = target.numel()
    return torch.tensor([a1.item() * n / 100.0, a5.item() * n / 100.0, n], dtype=torch.float64)


def _finish_counts(counts: Tensor, env: DistEnv | None = None) -> dict[str, float]:
    if env is not None and env.distributed:
        c = counts.to(env.device)
        torch.distributed.all_reduce(c)
        counts = c.cpu()
    n = max(1.0, counts[2].item())
    return dict(top1=100.0 * counts[0].item() / n, top5=100.0 * counts[1].item() / n)


@torch.no_grad()
def evaluate_head(head: nn.Module, batches, env: DistEnv | None = None) -> dict[str, float]:
    """Top-1 / top-5 (percent) of ``head`` over an iterable of (features, labels)."""
    was = head.training
    head.eval()
    counts = torch.zeros(3, dtype=torch.float64)
    for f, y in batches:
        counts += _accuracy_counts(head(f.float()), y.to(f.device))
    head.train(was)
    return _finish_counts(counts, env)




def train_head_on_features(train_f: Tensor, train_y: Tensor, val_f: Tensor, val_y: Tensor, num_classes: int,
                           cfg: Any, seed: int, max_iters: int | None = None, log: RunLog | None = None,
                           device: torch.device | str = "cpu") -> tuple[nn.Module, dict[str, float], dict[str, Any]]:
    """The cached protocol: train the probe head on feature tensors; (head, metrics, info)."""
    device = torch.device(device)
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = LinearProbeHead(train_f.shape[1], num_classes, bn=cfg.bn).to(device)
    bs = int(cfg.batch_size)
    n = train_f.shape[0]
    steps_per_epoch = n // bs if cfg.get("drop_last", True) else math.ceil(n / bs)
    if steps_per_epoch < 1:
        raise ValueError(f"cached probe: {n} training samples < batch_size {bs}")
    lr = cfg.blr * bs / 256
    opt = build_lars(head, lr, cfg.weight_decay, cfg.momentum, cfg.trust_coeff)
    sched = build_scheduler(opt, cfg.epochs, cfg.warmup_epochs, steps_per_epoch, cfg.min_lr)
    learner = Learner(head, lambda f, y: F.cross_entropy(head(f), y), opt, sched, state_name="head")
    step = 0
    if log is not None:
        total = cfg.epochs * steps_per_epoch
        log.progress(min(total, max_iters) if max_iters is not None else total)
    stop = False
    for epoch in range(cfg.epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(steps_per_epoch):
            idx = perm[i * bs:(i + 1) * bs]
            loss = learner.backward(train_f[idx].to(device), train_y[idx].to(device))
            step += 1
            learner.optimizer_step(step)
            log_step(log, loss, opt, epoch, step, cfg.log_interval)
            if max_iters is not None and step >= max_iters:
                stop = True
                break
        if stop:
            break
    val_batches = ((val_f[i:i + 4096].to(device), val_y[i:i + 4096].to(device)) for i in range(0, val_f.shape[0], 4096))
    metrics = evaluate_head(head, val_batches)
    info = dict(iters=step, epochs_run=epoch + (0 if stop and i + 1 < steps_per_epoch else 1), lr=lr,
                steps_per_epoch=steps_per_epoch)
    if log is not None:
        log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"]), step)
        log.info(f"cached probe: {step} iters, top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
    return head, metrics, info


def online_probe(vit: nn.Module, train_set: Dataset, val_set: Dataset, num_classes: int, cfg: Any, env: DistEnv,
                 work_dir: str | Path, seed: int, eff_batch: int, max_iters: int | None = None, log: RunLog | None = None,
                 resume_key: dict[str, Any] | None = None) -> tuple[dict[str, float], dict[str, Any]]:
    """MAE's online linear probe (resumable, :class:`~transfer.imagenet.loop.EpochLoop`); returns (metrics, info).
    Asserts the backbone is unchanged."""
    device = env.device
    vit = vit.to(device).eval()
    for p in vit.parameters():
        p.requires_grad_(False)
    snapshot = backbone_snapshot(vit)
    head = LinearProbeHead(vit.embed_dim, num_classes, bn=cfg.bn).to(device)
    ddp = nn.parallel.DistributedDataParallel(head, device_ids=[device.index] if device.type == "cuda" else None) \
        if env.distributed else None
    loop = EpochLoop(train_set, cfg, env, seed, "online probe")
    lr = cfg.blr * eff_batch / 256
    opt = build_lars(head, lr, cfg.weight_decay, cfg.momentum, cfg.trust_coeff)
    sched = build_scheduler(opt, cfg.epochs, cfg.warmup_epochs, loop.steps_per_epoch, cfg.min_lr)
    net = ddp if ddp is not None else head

    def loss(images: Tensor, target: Tensor) -> Tensor:
        with torch.no_grad(), _autocast(device, cfg.get("amp")):
            f = embed(vit, images.to(device, non_blocking=True), cfg.pooling)
        return F.cross_entropy(net(f.float()), target.to(device))

    step, epoch = loop.run(Learner(head, loss, opt, sched, state_name="head", ddp=ddp), work_dir, max_iters, log,
                           resume_key)
    metrics = evaluate_head(head, _embedded_batches(vit, val_set, env, cfg), env)
    assert_backbone_unchanged(vit, snapshot)
    if log is not None:
        log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"]), step)
        log.info(f"online probe: {step} iters, top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
    return metrics, dict(iters=step, epochs_done=epoch, lr=lr, steps_per_epoch=loop.steps_per_epoch)


def _embedded_batches(vit: nn.Module, val_set: Dataset, env: DistEnv, cfg: Any):
    """(pooled features, labels) of this rank's shard of ``val_set`` (no padding), through the frozen ``vit``."""
    idx = list(range(env.rank, len(val_set), env.world_size))
    for images, target in DataLoader(Subset(val_set, idx), batch_size=int(cfg.batch_size), shuffle=False,
                                     num_workers=cfg.num_workers):
        with torch.no_grad(), _autocast(env.device, cfg.get("amp")):
            yield embed(vit, images.to(env.device), cfg.pooling).float(), target.to(env.device)
