"""Train then test one OpenMMLab benchmark task with mmengine's Runner.

:func:`prepare_config` turns a benchmark config into the run's config (data root, student,
demo override, ``--max-iters``, ``--cfg-options``, fit to the student's arch) and lists every
change; :func:`run_mm_task` builds the Runner, resumes from the newest ``work_dir/iter_N.pth`` when
an earlier run of the same settings was interrupted (exactly: see :mod:`transfer.resume`), trains,
tests and returns the metrics.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

from mmengine.config import Config, ConfigDict, DictAction

from comad.io import atomic_write_json

from .cfg import (cut_schedule, fit_to_student, resolved_protocol, scale_sizes, set_data_root, single_process_norm,
                  train_dataset_repeats)
from .resume import resume_file, safe_checkpointing
from .student import read_student_arch
from .tasks import REPO_ROOT, MMTask, TaskResult

__all__ = ["parse_cfg_options", "prepare_config", "run_mm_task", "world_size_from_env", "RUN_RECORD"]

RUN_RECORD = "transfer_run.json"


def parse_cfg_options(items: list[str]) -> dict[str, Any]:
    """``['a.b=1', 'c=[1,2]']`` -> dict, with mmengine's ``DictAction`` value parsing."""
    if not items:
        return {}
    bad = [i for i in items if "=" not in i]
    if bad:
        raise ValueError(f"--cfg-options takes KEY=VALUE items; got {bad}")
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return dict(p.parse_args(["--cfg-options", *items]).cfg_options)


def world_size_from_env() -> int:
    """Processes of this run: torchrun's ``WORLD_SIZE`` or SLURM's ``SLURM_NTASKS`` (1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare_config(task: MMTask, student: Path, data_root: Path, work_dir: Path, max_iters: int | None, demo: bool,
                   cfg_options: list[str], world_size: int = 1, seed: int = 0,
                   train_images: int | None = None) -> tuple[Config, list[str]]:
    """The run's config and the list of changes made to the benchmark config.

    Order: demo override (sizes x factor, batch, workers, lr scale) -> data root -> student
    -> ``--cfg-options`` -> fit to the student's arch (fields set by --cfg-options win) ->
    ``--max-iters`` (or the demo's iterations; checkpoint / logger hooks given with --cfg-options
    kept) -> one-process norm -> kill-safe checkpoints (:func:`transfer.resume.safe_checkpointing`).
    """
    cfg = Config.fromfile(str(task.config_path))
    changes: list[str] = []
    if demo:
        d = task.demo
        changes += [f"demo: {c}" for c in scale_sizes(cfg._cfg_dict, d.size_factor)]
        cfg.train_dataloader.batch_size = d.batch_per_gpu
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
            cfg[key].num_workers = 0
            cfg[key].persistent_workers = False
        cfg.optim_wrapper.optimizer.lr = cfg.optim_wrapper.optimizer.lr * d.lr_scale
        changes.append(f"demo: batch_per_gpu {d.batch_per_gpu}, num_workers 0, lr x{d.lr_scale} "
                       f"-> {cfg.optim_wrapper.optimizer.lr:g}")
        if d.options:
            cfg.merge_from_dict(dict(d.options))
            changes += [f"demo: {k} = {v}" for k, v in d.options]
    changes += set_data_root(cfg, str(Path(data_root).resolve() / Path(cfg.data_root).relative_to("data")))
    cfg.model.backbone.student = str(student)
    options = parse_cfg_options(cfg_options)
    if options:
        cfg.merge_from_dict(options)
        changes.append(f"--cfg-options {options}")
    heads = options.get("model.backbone.num_heads")  # a head count the file may not state
    changes += fit_to_student(cfg, read_student_arch(student, num_heads=heads), explicit=options)
    iters = max_iters if max_iters is not None else (task.demo.iters if demo else None)
    if iters is not None:
        ipe = None
        if cfg.train_cfg.get("type") == "EpochBasedTrainLoop":
            # the protocol run's epoch length: protocol['train_images'] (else the images found) over the
            # protocol's effective batch (else this run's)
            protocol = cfg.get("protocol", {})
            n_images = protocol.get("train_images") or train_images
            if not n_images:
                raise ValueError("prepare_config: an epoch-based config cut to N iterations needs the train image count")
            per_step = int(protocol.get("effective_batch") or int(cfg.train_dataloader.batch_size) * world_size)
            ipe = max(1, -(-int(n_images) * train_dataset_repeats(cfg) // per_step))
        changes += cut_schedule(cfg, iters, ipe, log_interval=5 if demo else None)
        # cut_schedule sets the checkpoint / logger hooks and the log processor anew; --cfg-options win
        hooks = {k: v for k, v in options.items() if k.split(".", 1)[0] in ("default_hooks", "log_processor")}
        if hooks:
            cfg.merge_from_dict(hooks)
            changes.append(f"--cfg-options {hooks} kept over the cut schedule's hooks")
        if demo and task.demo.warmup_iters and max_iters is None:
            warm = cfg.param_scheduler[0]
            warm.end = warm.get("begin", 0) + task.demo.warmup_iters
            changes.append(f"demo: warm-up {warm.type} until iteration {warm.end}")
    if world_size == 1:
        changes += single_process_norm(cfg._cfg_dict)
    changes += safe_checkpointing(cfg)
    cfg.work_dir = str(work_dir)
    cfg.resume = True
    cfg.load_from = None
    cfg.randomness = ConfigDict(seed=seed, deterministic=False)
    cfg.launcher = "none" if world_size == 1 else cfg.get("launcher", "pytorch")
    return cfg, changes


def _guard_work_dir(work_dir: Path, record: dict[str, Any]) -> None:
    """Refuse to resume a work dir that holds a run with other settings (another student, ...)."""
    path = work_dir / RUN_RECORD
    if path.is_file():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in record.items() if old.get(k) != v}
        if diff:
            raise RuntimeError(
                f"work dir {work_dir} holds a run with other settings ({path}): "
                + "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
                + ". Pass another --work-dir, or delete that folder to start over."
            )
    else:
        atomic_write_json(record, path)


def _metrics(raw: dict[str, Any]) -> dict[str, float]:
    """Runner.test() output -> {name: float}, evaluator prefixes ('coco/') dropped."""
    out = {}
    for k, v in raw.items():
        try:
            out[k.split("/", 1)[-1]] = float(v)  # python and numpy scalars
        except (TypeError, ValueError):
            continue  # e.g. mmdet's '*_copypaste' strings
    return out


def run_mm_task(task: MMTask, student: Path, data_root: Path, work_dir: Path, max_iters: int | None, demo: bool,
                cfg_options: list[str], seed: int = 0, launcher: str | None = None) -> TaskResult:
    """Check the data, prepare the config, train (resuming), test; returns metrics + provenance."""
    from mmengine.logging import print_log

    from comad.engine.launch import ComadRunner
    from comad.mm_compat import enable_safe_resume

    summary = task.check(Path(data_root))
    world = world_size_from_env()
    cfg, changes = prepare_config(task, student, data_root, work_dir, max_iters, demo, cfg_options,
                                  world_size=world, seed=seed, train_images=summary.train_images)
    iters_run = max_iters if max_iters is not None else (task.demo.iters if demo else None)
    if world > 1:
        cfg.launcher = launcher or os.environ.get("COMAD_TRANSFER_LAUNCHER", "pytorch")
    cfg.experiment_name = f"{task.name}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
    work_dir.mkdir(parents=True, exist_ok=True)
    record = dict(task=task.name, config=str(task.config_path), student=str(Path(student).resolve()),
                  student_sha256=_sha256(Path(student)), demo=demo, max_iters=max_iters, cfg_options=list(cfg_options),
                  seed=seed, world_size=world)
    _guard_work_dir(work_dir, record)

    latest = resume_file(work_dir)
    if latest is not None:  # resume from the newest complete checkpoint, not from what last_checkpoint names
        cfg.load_from = str(latest)
        changes.append(f"resume from {latest}")
    enable_safe_resume()
    runner = ComadRunner.from_cfg(cfg)  # strict, data-only resume: the config text in a checkpoint is never run
    for c in changes:
        print_log(f"[transfer] config change: {c}", logger="current")
    protocol = dict(cfg.get("protocol", {}))
    resolved = resolved_protocol(cfg, world)
    if protocol.get("effective_batch") and resolved["effective_batch"] != protocol["effective_batch"]:
        print_log(f"[transfer] effective batch {resolved['effective_batch']} (= {world} GPUs x "
                  f"{resolved['batch_per_gpu']} x {resolved['grad_accumulation']}) differs from the protocol's "
                  f"{protocol['effective_batch']}; lr kept at {resolved['lr']:g} (linear rule would give "
                  f"{resolved['lr'] * resolved['effective_batch'] / protocol['effective_batch']:g}; enable it with "
                  f"-- --cfg-options auto_scale_lr.enable=True auto_scale_lr.base_batch_size="
                  f"{protocol['effective_batch']})", logger="current", level=30)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    load_report = dict(getattr(model.backbone, "load_report", {}))
    runner.train()
    metrics = _metrics(runner.test())
    no_predictions = not metrics and task.units == "fraction"
    if no_predictions:
        # mmdet's CocoMetric returns nothing when the model kept no detection (score_thr): AP is 0 then
        print_log(f"[transfer] task {task.name}: the model made no detection on the test set; every AP is 0",
                  logger="current", level=30)
        metrics = {k: 0.0 for k in task.metric_keys}
    missing = [k for k in task.metric_keys if k not in metrics]
    if missing:
        raise RuntimeError(f"task {task.name}: the evaluator returned {sorted(metrics)}, missing {missing}")
    # the protocol as run: the config's statement, overwritten by the values this run really used
    as_run = {k: resolved[k] for k in ("gpus", "batch_per_gpu", "grad_accumulation", "effective_batch", "lr",
                                       "weight_decay", "layer_decay", "drop_path", "pyramid_blocks", "inference")}
    name = protocol.get("name", task.config_path.stem) + (" [demo override]" if demo else "")
    loop = resolved["train_loop"]
    schedule = protocol.get("schedule", "")
    if iters_run is not None:
        schedule += f"; cut to {loop['max_iters']} iterations, lr schedule compressed (--max-iters / demo)"
    run_protocol = dict(protocol, **as_run, name=name, schedule=schedule,
                        pos_embed=load_report.get("pos_embed"), missing_keys=load_report.get("missing_keys"),
                        unexpected_keys=load_report.get("unexpected_keys"), backbone=resolved["backbone"],
                        train_loop=resolved["train_loop"])
    info = dict(config=str(task.config_path.relative_to(REPO_ROOT)), protocol=run_protocol, protocol_declared=protocol,
                units=task.units, effective_batch=resolved["effective_batch"],
                data=dict(root=summary.root, train_images=summary.train_images, val_images=summary.val_images),
                config_changes=changes, backbone_load=load_report, log_dir=str(runner.log_dir),
                no_detections=no_predictions,
                student_sha256=record["student_sha256"])
    return TaskResult(metrics=metrics, info=info)
