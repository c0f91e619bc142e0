"""Small, explicit edits of an mmengine ``Config`` made by ``transfer.run``.

Every function returns a list of human-readable changes, which the runner logs and records in
the metrics JSON, so no edit is silent:

- :func:`set_data_root`: point every path under the config's ``data_root`` at another folder;
- :func:`fit_to_student`: the student's arch into the backbone, and the widths / depths that
  the config lists in ``protocol['width_fields']`` / ``protocol['depth_fields']``;
- :func:`cut_schedule`: ``--max-iters N``: an iteration-based loop of N iterations whose
  lr schedulers are the config's, compressed to the same fractions of the run;
- :func:`scale_sizes`: every image-size pair times a factor (a demo config is its benchmark config at
  x 1/4: ``tests/test_demo_configs.py`` checks it with this);
- :func:`single_process_norm`: SyncBN -> BN when there is one process;
- :func:`resolved_protocol`: the values the run really uses (batch, lr, decay, ...).
"""
from __future__ import annotations

from typing import Any, Iterable

from mmengine.config import Config, ConfigDict

__all__ = ["get_path", "set_path", "set_data_root", "fit_to_student", "cut_schedule", "scale_sizes",
           "single_process_norm", "resolved_protocol", "train_dataset_repeats"]

_MISSING = object()


def _walk_key(obj: Any, part: str) -> Any:
    if isinstance(obj, (list, tuple)):
        return obj[int(part)]
    return obj[part]


def get_path(cfg: Any, dotted: str, default: Any = _MISSING) -> Any:
    """``cfg['a']['b'][0]`` for ``'a.b.0'`` (integers index lists)."""
    obj = cfg
    try:
        for part in dotted.split("."):
            obj = _walk_key(obj, part)
    except (KeyError, IndexError, ValueError, TypeError):
        if default is _MISSING:
            raise KeyError(f"config has no field '{dotted}'") from None
        return default
    return obj


def set_path(cfg: Any, dotted: str, value: Any) -> None:
    """Set ``'a.b.0'``; the parent must exist."""
    *parents, last = dotted.split(".")
    obj = get_path(cfg, ".".join(parents)) if parents else cfg
    if isinstance(obj, list):
        obj[int(last)] = value
    elif isinstance(obj, tuple):
        raise TypeError(f"config field '{'.'.join(parents)}' is a tuple; cannot set '{dotted}'")
    else:
        obj[last] = value


def _replace_strings(obj: Any, old: str, new: str, where: str, changes: list[str]) -> Any:
    if isinstance(obj, str):
        if obj.startswith(old):
            changes.append(f"{where}: {obj!r} -> {new + obj[len(old):]!r}")
            return new + obj[len(old):]
        return obj
    if isinstance(obj, dict):
        for k in list(obj):
            obj[k] = _replace_strings(obj[k], old, new, f"{where}.{k}", changes)
        return obj
    if isinstance(obj, list):
        return [_replace_strings(v, old, new, f"{where}.{i}", changes) for i, v in enumerate(obj)]
    return obj


def set_data_root(cfg: Config, new_root: str) -> list[str]:
    """Replace the config's ``data_root`` prefix in every dataloader / evaluator path."""
    old = cfg.get("data_root")
    if not old:
        raise KeyError(f"config {cfg.filename} has no top-level 'data_root' to replace")
    new = str(new_root).rstrip("/") + ("/" if str(old).endswith("/") else "")
    changes: list[str] = []
    for key in ("train_dataloader", "val_dataloader", "test_dataloader", "val_evaluator", "test_evaluator"):
        if key in cfg and cfg[key] is not None:
            cfg[key] = _replace_strings(cfg[key], str(old), new, key, changes)
    cfg.data_root = new
    return changes


def _scale_width(value: Any, old: int, new: int, field: str) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_scale_width(v, old, new, field) for v in value)
    if (int(value) * new) % old:
        raise ValueError(f"config field '{field}' = {value} does not scale from width {old} to {new} exactly")
    return int(value) * new // old


def fit_to_student(cfg: Config, arch: dict[str, int], explicit: Iterable[str] = ()) -> list[str]:
    """Make the config's backbone match the student's ``arch`` (embed_dim, depth, num_heads, patch_size).

    Widths in ``protocol['width_fields']`` are rescaled by new/old width; for a new depth,
    ``protocol['depth_fields']['last_blocks']`` (the last N blocks) becomes the student's last N,
    ``protocol['depth_fields']['out_indices']`` maps each block ``i`` to ``(i+1)*new/old - 1``
    (an error when that is not an integer, unless the field is in ``explicit``, i.e. given
    with --cfg-options) and ``['num_layers']`` becomes the depth.
    """
    bb = cfg.model.backbone
    protocol = cfg.get("protocol", {})
    explicit = set(explicit)
    changes = []
    old_dim, old_depth = int(bb.embed_dim), int(bb.depth)
    new_dim, new_depth = int(arch["embed_dim"]), int(arch["depth"])
    for field in protocol.get("width_fields", ()):
        if new_dim != old_dim and field not in explicit:
            before = get_path(cfg, field)
            set_path(cfg, field, _scale_width(before, old_dim, new_dim, field))
            changes.append(f"{field}: {before} -> {get_path(cfg, field)} (student width {new_dim})")
    depth_fields = dict(protocol.get("depth_fields", {}))
    f = depth_fields.get("last_blocks")  # "the last N blocks" (DINOv2's probes): the student's last N
    if f and new_depth != old_depth and f not in explicit:
        before = tuple(int(i) for i in get_path(cfg, f))
        if before != tuple(range(old_depth - len(before), old_depth)):
            raise ValueError(f"config {cfg.filename}: {f}={before} is not the last {len(before)} blocks of {old_depth}")
        set_path(cfg, f, tuple(range(new_depth - len(before), new_depth)))
        changes.append(f"{f}: {before} -> {get_path(cfg, f)} (the last {len(before)} blocks of the depth-{new_depth} student)")
    if new_depth != old_depth:
        f = depth_fields.get("out_indices")
        if f and f not in explicit:
            before = [int(i) for i in get_path(cfg, f)]
            mapped = [(i + 1) * new_depth / old_depth - 1 for i in before]
            if any(m != int(m) or m < 0 for m in mapped):
                raise ValueError(
                    f"config {cfg.filename}: pyramid blocks {before} (depth {old_depth}) have no exact counterpart "
                    f"for a depth-{new_depth} student; pass -- --cfg-options {f}=[...]"
                )
            set_path(cfg, f, tuple(int(m) for m in mapped))
            changes.append(f"{f}: {tuple(before)} -> {get_path(cfg, f)} (student depth {new_depth})")
        f = depth_fields.get("num_layers")
        if f and f not in explicit:
            set_path(cfg, f, new_depth)
            changes.append(f"{f}: {old_depth} -> {new_depth}")
    for k in ("embed_dim", "depth", "num_heads", "patch_size"):
        if f"model.backbone.{k}" in explicit:
            continue
        if int(bb[k]) != int(arch[k]):
            changes.append(f"model.backbone.{k}: {bb[k]} -> {arch[k]} (student arch)")
            bb[k] = int(arch[k])
    return changes


def train_dataset_repeats(cfg: Config) -> int:
    """How many times the train dataloader repeats its base dataset (``RepeatDataset`` wrappers)."""
    ds, times = cfg.train_dataloader.dataset, 1
    while isinstance(ds, dict) and ds.get("type") == "RepeatDataset":
        times *= int(ds.get("times", 1))
        ds = ds.dataset
    return times


def _scale_value(v: float, factor: float, lo: int) -> int:
    return max(lo, int(round(v * factor)))


def cut_schedule(cfg: Config, max_iters: int, iters_per_epoch: int | None, log_interval: int | None = None
                 ) -> list[str]:
    """Train ``max_iters`` iterations with the config's lr schedule compressed to fit them.

    Scheduler boundaries and milestones keep their fraction of the original run:
    epoch-valued ones over ``max_epochs``, iteration-valued ones over the original total
    iterations (``max_epochs * iters_per_epoch`` for epoch-based loops). Warm-ups keep at
    least one iteration. The loop becomes ``IterBasedTrainLoop`` with no validation inside it
    (the runner tests once at the end: val_cfg / val_dataloader / val_evaluator are dropped),
    checkpoints every ``max_iters`` iterations.
    """
    if max_iters < 1:
        raise ValueError(f"--max-iters must be >= 1, got {max_iters}")
    loop = cfg.train_cfg
    if loop.get("type") == "IterBasedTrainLoop":
        total_iters, epochs = int(loop.max_iters), None
    elif loop.get("type") == "EpochBasedTrainLoop":
        if not iters_per_epoch:
            raise ValueError("cut_schedule: an epoch-based config needs iters_per_epoch")
        epochs = int(loop.max_epochs)
        total_iters = epochs * iters_per_epoch
    else:
        raise ValueError(f"cut_schedule: unsupported train loop {loop.get('type')!r}")
    changes = [f"train_cfg: {dict(loop)} -> IterBasedTrainLoop(max_iters={max_iters}) "
               f"(original run {total_iters} iterations)"]
    cfg.train_cfg = ConfigDict(type="IterBasedTrainLoop", max_iters=max_iters, val_interval=max_iters + 1)
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None  # IterBasedTrainLoop validates at its last iteration
    scheds = cfg.get("param_scheduler") or []
    scheds = [scheds] if isinstance(scheds, dict) else list(scheds)
    out = []
    for s in scheds:
        s = ConfigDict(dict(s))
        by_epoch = bool(s.get("by_epoch", True))
        unit_total = epochs if by_epoch else total_iters
        if by_epoch and epochs is None:
            raise ValueError(f"cut_schedule: scheduler {s.get('type')} counts epochs in an iteration-based config")
        f = max_iters / unit_total
        before = dict(s)
        if "begin" in s:
            s.begin = min(max_iters - 1, int(round(s.begin * f)))
        if "end" in s:  # at least 2 iterations: mmengine's LinearLR needs end - begin >= 2 to reach its end factor
            s.end = max(s.get("begin", 0) + 2, int(round(s.end * f)))
        if "milestones" in s:
            s.milestones = [_scale_value(m, f, 1) for m in s.milestones]
        s.by_epoch = False
        s.pop("convert_to_iter_based", None)
        out.append(s)
        changes.append(f"param_scheduler {s.get('type')}: {before} -> {dict(s)}")
    cfg.param_scheduler = out
    hooks = cfg.setdefault("default_hooks", ConfigDict())
    hooks.checkpoint = ConfigDict(type="CheckpointHook", by_epoch=False, interval=max_iters, max_keep_ckpts=1)
    # at most max_iters, so that even a smoke run (--max-iters 2) logs its training and gets its table row
    interval = min(log_interval or max(1, min(50, max_iters // 10)), max_iters)
    hooks.logger = ConfigDict(type="LoggerHook", interval=interval, log_metric_by_epoch=False)
    cfg.log_processor = ConfigDict(type="LogProcessor", window_size=interval, by_epoch=False)
    changes.append(f"checkpoint every {max_iters} iterations, log every {interval}")
    return changes


_SIZE_KEYS = ("scale", "crop_size", "size", "img_size", "stride")


def _is_size_pair(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(isinstance(x, int) and x > 1 for x in v)


def scale_sizes(cfg: Any, factor: float, where: str = "", changes: list[str] | None = None) -> list[str]:
    """Multiply every image-size pair (``scale``, ``crop_size``, ``size``, ``img_size``, ``stride``) by ``factor``."""
    changes = [] if changes is None else changes
    if isinstance(cfg, dict):
        for k in list(cfg):
            v = cfg[k]
            if k in _SIZE_KEYS and _is_size_pair(v):
                cfg[k] = type(v)(max(1, int(round(x * factor))) for x in v)
                changes.append(f"{where}{k}: {tuple(v)} -> {tuple(cfg[k])}")
            elif isinstance(v, (dict, list)):
                scale_sizes(v, factor, f"{where}{k}.", changes)
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            scale_sizes(v, factor, f"{where}{i}.", changes)
    return changes


def single_process_norm(cfg: Any, where: str = "", changes: list[str] | None = None) -> list[str]:
    """``SyncBN`` -> ``BN`` everywhere (SyncBN needs a process group)."""
    changes = [] if changes is None else changes
    if isinstance(cfg, dict):
        for k in list(cfg):
            v = cfg[k]
            if k == "type" and v == "SyncBN":
                cfg[k] = "BN"
                changes.append(f"{where.rstrip('.')}: SyncBN -> BN (one process)")
            elif isinstance(v, (dict, list)):
                single_process_norm(v, f"{where}{k}.", changes)
    elif isinstance(cfg, list):
        for i, v in enumerate(cfg):
            single_process_norm(v, f"{where}{i}.", changes)
    return changes


def resolved_protocol(cfg: Config, world_size: int) -> dict[str, Any]:
    """What the run really uses, read from the final config (after every override)."""
    bb = cfg.model.backbone
    ow = cfg.optim_wrapper
    per_gpu = int(cfg.train_dataloader.batch_size)
    accum = int(ow.get("accumulative_counts", 1))
    test_cfg = cfg.model.get("test_cfg") or {}
    loop = cfg.train_cfg
    return dict(
        gpus=world_size, batch_per_gpu=per_gpu, grad_accumulation=accum, effective_batch=world_size * per_gpu * accum,
        lr=float(ow.optimizer.lr), weight_decay=float(ow.optimizer.get("weight_decay", 0.0)),
        layer_decay=float((ow.get("paramwise_cfg") or {}).get("decay_rate", 1.0)),
        drop_path=float(bb.get("drop_path_rate", 0.0)),
        pyramid_blocks=tuple(int(i) % int(bb.depth) for i in bb.out_indices),
        backbone=dict(type=bb.type, embed_dim=int(bb.embed_dim), depth=int(bb.depth), num_heads=int(bb.num_heads),
                      patch_size=int(bb.patch_size), img_size=tuple(bb.img_size)),
        train_loop=dict(loop),
        inference=(f"slide, crop {tuple(test_cfg.crop_size)}, stride {tuple(test_cfg.stride)}"
                   if test_cfg.get("mode") == "slide" else test_cfg.get("mode", "whole")),
    )

