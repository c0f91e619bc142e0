"""What an ImageNet protocol's record says it ran (``metrics.json``'s ``protocol``), read from the
config that ran and the schedule derived for it."""
from __future__ import annotations

from typing import Any

from mmengine.config import Config

from ..runner import TaskRequest
from .config import nested_datasets

__all__ = ["protocol_entries"]

_BN = "BatchNorm1d(affine=False, eps=1e-6)"


def _train_transform(cfg: Config) -> dict[str, Any]:
    for ds in nested_datasets(cfg.train_dataloader.dataset):
        if "transform" in ds:
            return dict(ds.transform)
    return {}


def _trained(cfg: Config, facts: dict[str, Any], runner: Any) -> dict[str, Any]:
    sched, opt = facts["sched"], cfg.optim_wrapper.optimizer
    return dict(train_samples=facts["train_samples"], blr=cfg.schedule.base_lr, lr=sched["lr"],
                epochs=cfg.schedule.epochs, warmup_epochs=cfg.schedule.warmup_epochs, weight_decay=opt.get("weight_decay"),
                batch_size=int(cfg.train_dataloader.batch_size), accumulation=int(cfg.get("accumulation", 1)),
                iters_run=int(runner.iter), optimizer="LARS" if opt.type == "TimmLars" else opt.type)


def _by_task(task: str, cfg: Config) -> dict[str, Any]:
    m = cfg.model
    if task == "imagenet-ft":
        aug = _train_transform(cfg)
        ema = any(h.get("type") == "EMAHook" for h in cfg.get("custom_hooks") or [])
        return dict(pooling=m.pooling, img_size=m.img_size, layer_decay=cfg.optim_wrapper.paramwise_cfg.layer_decay,
                    drop_path=m.drop_path_rate, auto_augment=aug.get("auto_augment"), mixup=dict(m.mixup or {}),
                    model_ema=ema, head="avg + fc_norm (MAE global pool)" if m.pooling == "mean" else "CLS + norm")
    if task == "imagenet-linear":
        aug = _train_transform(cfg)
        return dict(protocol="mae-online", pooling=m.pooling, img_size=m.img_size, bn=_BN if m.bn else "none",
                    train_aug=dict(scale=list(aug.get("scale", ())), hflip=aug.get("hflip")))
    f = cfg.features
    common = dict(pooling=f.pooling, img_size=f.img_size, crop="centre", crop_pct=f.crop_pct)
    if task == "imagenet-linear-cached":
        return dict(common, protocol="cached", bn=_BN if m.bn else "none")
    return dict(common, protocol="knn", k=m.k, temperature=m.temperature, voting=m.voting, bn="none")


def protocol_entries(task: str, cfg: Config, request: TaskRequest, facts: dict[str, Any], runner: Any,
                     report: dict[str, Any]) -> dict[str, Any]:
    """The protocol as run: the config's statement of it, the derived schedule, the student's load report."""
    out = dict(name=cfg.protocol_name, world_size=request.world_size, max_iters=request.max_iters)
    out.update(_by_task(task, cfg))
    if facts.get("sched"):
        out.update(_trained(cfg, facts, runner))
    if "caches" in facts:
        out.update(facts["caches"]["info"])
    out.update({k: report.get(k) for k in ("pos_embed", "missing_keys", "unexpected_keys")})
    return out
