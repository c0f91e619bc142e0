"""The config an ImageNet protocol runs: its file, checked options, and what the run derives from it.

- :func:`load_task_config`: a benchmark or demo config under ``benchmark_configs/imagenet/``, with
  ``--cfg-options`` checked key by key;
- :func:`derive_schedule`: the written schedule (iterations, lr, scheduler bounds, checkpoint and
  validation intervals, all for the config's ``gpus`` and training set) derived again for this run's
  process count, accumulation and training set from ``schedule`` (:mod:`comad.engine.schedule`, as
  the distillation does); ``--max-iters`` compresses the whole schedule into that many iterations, as
  for every task. Every change is returned for the log, and mmengine dumps the config run into the
  work dir.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from mmengine.config import Config

from comad.engine.schedule import apply_schedule, resolve_schedule
from comad.repo import REPO_ROOT
from comad.runtime import parse_cfg_options

__all__ = ["CONFIG_DIR", "load_task_config", "nested_datasets", "derive_schedule"]

CONFIG_DIR = REPO_ROOT / "benchmark_configs" / "imagenet"


def _check_keys(cfg: Config, options: dict[str, Any], source: str) -> None:
    tree = cfg.to_dict()
    for dotted in options:
        node: Any = tree
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{source}: unknown config key '{dotted}' (not in the config; known top-level keys: "
                               f"{sorted(k for k in cfg.keys() if not k.startswith('_'))})")
            node = node[part]


def load_task_config(path: str | Path, cfg_options: Sequence[str] = ()) -> Config:
    """Load a benchmark config (a benchmark or a demo config), then apply ``cfg_options``.

    ``cfg_options`` are ``key=value`` strings as mmengine's ``--cfg-options`` takes them
    (dotted keys, lists ``[a,b]``). Unknown keys raise ``KeyError`` naming the key and file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path}: no such file (configs live in {CONFIG_DIR})")
    cfg = Config.fromfile(str(path))
    parsed = parse_cfg_options(cfg_options, f"config {path}")
    if parsed:
        _check_keys(cfg, parsed, f"cfg_options for config {path}")
        cfg.merge_from_dict(parsed)
    return cfg


def nested_datasets(ds: Any) -> Iterator[Any]:
    """A dataset config and the ones it wraps (``dataset=dict(...)``), outermost first."""
    while isinstance(ds, dict):
        yield ds
        ds = ds.get("dataset")


def _iters_per_epoch(cfg: Config, schedule: dict[str, Any], world: int) -> int:
    return int(resolve_schedule(schedule, int(cfg.train_dataloader.batch_size), world,
                                int(cfg.get("accumulation", 1)))["iters_per_epoch"])


def _rescale_interval(holder: Any, key: str, written_ipe: int, ipe: int, where: str,
                      explicit: Iterable[str]) -> str | None:
    """``holder[key]`` (iterations at ``written_ipe`` per epoch) -> the same epochs at ``ipe``; a value
    given with ``--cfg-options`` (``where`` in ``explicit``) is this run's own and kept."""
    old = int(holder[key])
    if where in explicit:
        return None
    new = max(1, round(old / written_ipe * ipe))
    if new == old:
        return None
    holder[key] = new
    return f"{where}: {old} -> {new} iterations ({old / written_ipe:g} epochs)"


def derive_schedule(cfg: Config, num_train: int, world: int, max_iters: int | None = None,
                    explicit: Iterable[str] = ()) -> tuple[dict, list[str]]:
    """Derive the schedule for ``world`` processes and ``num_train`` training samples (module docstring).

    ``explicit``: the keys given with ``--cfg-options``; a checkpoint or validation interval among them
    counts this run's iterations and is kept.

    Returns (the resolved schedule of :func:`comad.engine.schedule.resolve_schedule`, the changes).
    """
    if num_train < 1:
        raise ValueError(f"config {cfg.filename}: the training set is empty")
    written = dict(cfg.schedule)
    written_ipe = _iters_per_epoch(cfg, written, int(cfg.get("gpus", 1)))
    run = dict(written, num_train_images=int(num_train), max_iters=max_iters)
    accum = int(cfg.get("accumulation", 1))
    cfg.optim_wrapper.accumulative_counts = accum
    sched = resolve_schedule(run, int(cfg.train_dataloader.batch_size), world, accum)
    changes = [] if num_train == written.get("num_train_images") else [
        f"schedule.num_train_images: {written.get('num_train_images')} -> {num_train} (the training set found)"]
    changes += apply_schedule(cfg, sched)
    ck = cfg.default_hooks.checkpoint
    if max_iters or cfg.get("val_dataloader") is None:  # a cut run (or no validation): one test at the end
        if cfg.get("val_dataloader") is not None:
            changes.append("val_dataloader / val_cfg / val_evaluator: dropped (--max-iters: one test at the end)")
        cfg.val_dataloader = cfg.val_cfg = cfg.val_evaluator = None
        cfg.train_cfg.pop("val_interval", None)
    else:
        changes.append(_rescale_interval(cfg.train_cfg, "val_interval", written_ipe, int(sched["iters_per_epoch"]),
                                         "train_cfg.val_interval", explicit))
    if max_iters and "default_hooks.checkpoint.interval" not in explicit:  # a cut run: one checkpoint, at its end
        changes.append(f"default_hooks.checkpoint.interval: {ck.interval} -> {max_iters} (--max-iters)")
        ck.interval = int(max_iters)
    elif not max_iters:
        changes.append(_rescale_interval(ck, "interval", written_ipe, int(sched["iters_per_epoch"]),
                                         "default_hooks.checkpoint.interval", explicit))
    # a checkpoint inside an accumulation window would lose that window's gradients on resume
    if int(ck.interval) % accum:
        changes.append(f"default_hooks.checkpoint.interval: {ck.interval} -> {-(-int(ck.interval) // accum) * accum} "
                       f"(a multiple of accumulation={accum}: a resumed run must start on an optimizer step)")
        ck.interval = -(-int(ck.interval) // accum) * accum
    ck.interval = min(int(ck.interval), int(sched["max_iters"]))
    return sched, [c for c in changes if c]
