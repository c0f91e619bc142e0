"""Turn a config's epoch schedule into iterations and an lr for the actual device count."""
from __future__ import annotations

import math
from typing import Any

__all__ = ["resolve_schedule", "apply_schedule"]


def resolve_schedule(schedule: dict[str, Any], batch_size: int, world_size: int, accumulation: int) -> dict[str, Any]:
    """Iterations, warm-up and lr from ``schedule`` for ``world_size`` x ``batch_size`` x ``accumulation``.

    ``schedule`` keys: ``epochs``, ``warmup_epochs``, ``num_train_images``, ``base_lr`` (the lr
    per ``base_batch`` images), ``base_batch``; optional ``max_iters`` (cut the run) and
    ``warmup_iters`` (instead of ``warmup_epochs``). The lr follows the linear scaling rule
    ``base_lr * effective_batch / base_batch``, so a run on another GPU count keeps the recipe;
    iterations count micro-batches (mmengine's convention with gradient accumulation).
    """
    known = {"epochs", "warmup_epochs", "warmup_iters", "num_train_images", "base_lr", "base_batch", "min_lr", "max_iters"}
    unknown = sorted(set(schedule) - known)
    if unknown:
        raise ValueError(f"schedule: unknown key(s) {unknown}; allowed: {sorted(known)}")
    for key in ("base_lr", "base_batch"):
        if key not in schedule:
            raise ValueError(f"schedule.{key} is required")
    if batch_size < 1 or world_size < 1 or accumulation < 1:
        raise ValueError(f"batch_size, world size and accumulation must be >= 1, got {batch_size}, {world_size}, {accumulation}")
    eff = batch_size * world_size * accumulation
    out: dict[str, Any] = dict(effective_batch=eff, batch_size=batch_size, world_size=world_size, accumulation=accumulation,
                               lr=schedule["base_lr"] * eff / schedule["base_batch"], min_lr=schedule.get("min_lr", 0.0))
    n = schedule.get("num_train_images")
    micro_per_epoch = None
    if n:
        micro_per_epoch = math.ceil(n / eff) * accumulation
        out["iters_per_epoch"] = micro_per_epoch
        out["max_iters"] = int(schedule["epochs"] * micro_per_epoch)
    if schedule.get("max_iters"):
        out["max_iters"] = int(schedule["max_iters"])
    if "max_iters" not in out:
        raise ValueError("schedule: give num_train_images (with epochs) or max_iters")
    if schedule.get("warmup_iters") is not None:
        warm = int(schedule["warmup_iters"])
    elif micro_per_epoch is not None:
        warm = int(schedule.get("warmup_epochs", 0) * micro_per_epoch)
    else:
        warm = 0
    out["warmup_iters"] = min(warm, out["max_iters"])
    return out


def apply_schedule(cfg: Any, sched: dict[str, Any]) -> list[str]:
    """Write a derived schedule (:func:`resolve_schedule`) into ``cfg``: the optimizer's lr, the
    loop's ``max_iters`` and every lr scheduler's bounds. A bound at the config's own warm-up end or
    total becomes the derived one; any other bound keeps its fraction of the run. A scheduler whose
    span the derived run cuts to nothing is dropped (a smoke run shorter than its warm-up is all
    warm-up). A cosine's floor is ``min_lr``; written as ``eta_min_ratio`` it is ``min_lr / lr`` of each
    parameter group's own lr (layer decay: MAE's ``min_lr x lr_scale``). Returns what changed (for the log)."""
    old_total = int(cfg.train_cfg.get("max_iters") or 0)
    scheds = list(cfg.param_scheduler)
    warm_ends = {int(s["end"]) for s in scheds if s.get("type") == "LinearLR" and int(s.get("begin", 0)) == 0
                 and s.get("end") is not None}
    old_warm = min(warm_ends) if warm_ends else None
    new_total, new_warm = int(sched["max_iters"]), int(sched["warmup_iters"])

    def bound(v: Any) -> int:
        v = int(v)
        if old_warm is not None and v == old_warm:
            return new_warm
        if v == old_total or not old_total:
            return new_total
        return min(new_total, int(round(v * new_total / old_total)))

    changes = []
    for key, new in (("optim_wrapper.optimizer.lr", sched["lr"]), ("train_cfg.max_iters", new_total)):
        parent, leaf = key.rsplit(".", 1)
        obj = cfg
        for part in parent.split("."):
            obj = obj[part]
        if obj.get(leaf) != new:
            changes.append(f"{key}: {obj.get(leaf)} -> {new}")
            obj[leaf] = new
    out = []
    for s in scheds:
        before = (s.get("begin", 0), s.get("end"))
        s["begin"] = bound(s.get("begin", 0)) if s.get("begin", 0) else 0
        s["end"] = bound(s["end"]) if s.get("end") is not None else new_total
        if s.get("type") == "CosineAnnealingLR" and "eta_min_ratio" in s:
            s["eta_min_ratio"] = sched["min_lr"] / sched["lr"]  # each param group ends at min_lr x its lr scale (MAE)
        elif s.get("type") == "CosineAnnealingLR":
            s["eta_min"] = sched["min_lr"]
        if before != (s["begin"], s["end"]):
            changes.append(f"param_scheduler {s.get('type')}: [{before[0]}, {before[1]}) -> [{s['begin']}, {s['end']})")
        if s["end"] > s["begin"]:
            out.append(s)
    cfg.param_scheduler = out
    return changes
