"""The dense benchmark tasks (ADE20K, COCO): train then test one config with mmengine's Runner.

An :class:`MMTask` is a benchmark config under ``benchmark_configs/`` plus dataset checks (the
layout; for COCO also the category names the config keeps) and a demo config (``--demo``); ``MMTask.run(request)`` is its entry in the task table
(``transfer/tasks.py``). :func:`prepare_config` turns the benchmark config into the run's
config (data root, student, ``--max-iters``, ``--cfg-options``, fit to the
student's arch) and lists every change; :func:`run_mm_task` builds the Runner, resumes from the
newest ``work_dir/iter_N.pth`` when an earlier run of the same settings was interrupted
(exactly: see :mod:`transfer.resume`), trains, tests and returns the metrics with their
provenance and the trained model as a release (:mod:`transfer.mm_release`; the task layer,
:func:`transfer.runner.finish_task`, publishes it and writes ``metrics.json``).
"""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmengine.config import Config, ConfigDict

from comad.checkpoint import content_sha256, read_arch
from comad.console import notice, prints_to_log
from comad.engine.progress import add_progress_hook
from .runner import TaskRequest, TaskResult
from comad.repo import REPO_ROOT, repo_relative
from comad.io import atomic_write_json
from comad.runtime import parse_cfg_options

from .cfg import (cut_schedule, fit_to_student, resolved_protocol, set_data_root, single_process_norm,
                  train_dataset_repeats)
from .datasets import DataSummary
from .resume import resume_file, safe_checkpointing

__all__ = ["MMTask", "prepare_config", "run_mm_task", "build_task_runner", "guarded_optim_wrapper", "runner_metrics", "RUN_RECORD",
           "RUN_OUTPUTS"]

RUN_RECORD = "transfer_run.json"
#: What a task run leaves at the top of its work dir (moved aside together by ``--archive``).
RUN_OUTPUTS = ("iter_*.pth", "last_checkpoint", RUN_RECORD, "metrics.json", "release")


@dataclass(frozen=True)
class MMTask:
    """An OpenMMLab benchmark: a config under ``benchmark_configs/``, its demo config and a dataset check.

    ``demo_config`` is the benchmark config's demo form (``--demo``), a config file like any other:
    it inherits the benchmark config and changes only what makes it a demo (image sizes, batch,
    iterations, lr), which ``tests/test_demo_configs.py`` checks.
    """

    name: str
    config: str
    demo_config: str
    check: Callable[[Path], DataSummary]
    metric_keys: tuple[str, ...]
    units: str = "percent"  # of the evaluator's numbers: mmseg's IoUMetric gives percent, mmdet's CocoMetric fractions
    #: ``(data_root, classes the config keeps or None) -> None``, raising on data the dataset would drop
    check_classes: Callable[[Path, tuple[str, ...] | None], None] | None = None

    @property
    def config_path(self) -> Path:
        return REPO_ROOT / self.config

    def config_for(self, request: TaskRequest) -> Path:
        """The config this request runs: the demo config with ``--demo``, else the benchmark config."""
        return REPO_ROOT / (self.demo_config if request.demo else self.config)

    def run(self, request: TaskRequest) -> TaskResult:
        """The task-table entry: :func:`run_mm_task` of this benchmark."""
        return run_mm_task(self, request)


def _cut(cfg: Config, request: TaskRequest, options: dict[str, Any], train_images: int | None) -> list[str]:
    """``--max-iters``: the schedule cut to ``request.max_iters``, --cfg-options hooks kept."""
    ipe = None
    if cfg.train_cfg.get("type") == "EpochBasedTrainLoop":
        # the protocol run's epoch length: protocol['train_images'] (else the images found) over the
        # protocol's effective batch (else this run's)
        protocol = cfg.get("protocol", {})
        n_images = protocol.get("train_images") or train_images
        if not n_images:
            raise ValueError("prepare_config: an epoch-based config cut to N iterations needs the train image count")
        per_step = int(protocol.get("effective_batch") or int(cfg.train_dataloader.batch_size) * request.world_size)
        ipe = max(1, -(-int(n_images) * train_dataset_repeats(cfg) // per_step))
    changes = cut_schedule(cfg, request.max_iters, ipe)
    # cut_schedule sets the checkpoint / logger hooks and the log processor anew; --cfg-options win
    hooks = {k: v for k, v in options.items() if k.split(".", 1)[0] in ("default_hooks", "log_processor")}
    if hooks:
        cfg.merge_from_dict(hooks)
        changes.append(f"--cfg-options {hooks} kept over the cut schedule's hooks")
    return changes


def prepare_config(task: MMTask, request: TaskRequest, train_images: int | None = None) -> tuple[Config, list[str]]:
    """The run's config and the list of changes made to the benchmark config.

    The config is the task's benchmark config, or with ``--demo`` its demo config. Order: data
    root -> student -> ``--cfg-options`` -> fit to the student's arch (fields set by --cfg-options
    win) -> ``--max-iters`` (checkpoint / logger hooks given with --cfg-options kept) -> one-process
    norm -> kill-safe checkpoints (:func:`transfer.resume.safe_checkpointing`).
    """
    if request.config is not None:
        raise ValueError(f"task {task.name}: runs its own config {task.config}; another config "
                         f"({request.config}) is for the ImageNet tasks")
    student, world_size = request.student, request.world_size
    cfg = Config.fromfile(str(task.config_for(request)))
    changes = set_data_root(cfg, str(request.data_root.resolve() / Path(cfg.data_root).relative_to("data")))
    # the student initialises training only (ComadMAEViT.init_weights): a config or checkpoint
    # made from this run builds from the architecture alone
    cfg.model.backbone.student = None
    cfg.model.backbone.init_cfg = ConfigDict(type="Pretrained", checkpoint=str(student))
    options = parse_cfg_options(request.cfg_options)
    if options:
        cfg.merge_from_dict(options)
        changes.append(f"--cfg-options {options}")
    heads = options.get("model.backbone.num_heads")  # a head count the file may not state
    changes += fit_to_student(cfg, read_arch(request.student, num_heads=heads), explicit=options)
    if request.max_iters is not None:
        changes += _cut(cfg, request, options, train_images)
    if world_size == 1:
        changes += single_process_norm(cfg._cfg_dict)
    changes += guarded_optim_wrapper(cfg)
    changes += safe_checkpointing(cfg)
    changes += add_progress_hook(cfg, task.name, task.metric_keys[:1])
    cfg.work_dir = str(request.work_dir)
    cfg.resume = True
    cfg.load_from = None
    cfg.randomness = ConfigDict(seed=_seed(request), deterministic=False)
    cfg.launcher = "none" if world_size == 1 else (request.launcher if request.launcher != "none" else "pytorch")
    return cfg, changes


def guarded_optim_wrapper(cfg: Config) -> list[str]:
    """mmengine's optimizer wrapper -> comad.engine's, which stops before a non-finite update naming
    the iteration (the distillation's ``nan_policy='raise'``); a recipe's AMP needs CUDA: without it
    the run is fp32, and says so."""
    import torch

    ow = cfg.get("optim_wrapper") or {}
    kind = ow.get("type", "OptimWrapper")
    changes = []
    if kind == "AmpOptimWrapper" and not torch.cuda.is_available():
        for key in ("loss_scale", "dtype"):
            ow.pop(key, None)
        kind = "OptimWrapper"
        changes.append("optim_wrapper: AmpOptimWrapper -> fp32 (no CUDA device: this run is not the recipe's AMP)")
    guarded = {"OptimWrapper": "ComadOptimWrapper", "AmpOptimWrapper": "ComadAmpOptimWrapper"}.get(kind)
    if guarded is None:
        raise ValueError(f"optim_wrapper.type {kind!r}: expected OptimWrapper or AmpOptimWrapper (the runner adds the "
                         "stop on a non-finite loss to them)")
    ow["type"] = guarded
    return changes + [f"optim_wrapper.type: {kind} -> {guarded} (stops before a non-finite update, naming the iteration)"]


def _seed(request: TaskRequest) -> int:
    return 0 if request.seed is None else int(request.seed)


def _guard_work_dir(work_dir: Path, record: dict[str, Any], archive: bool = False) -> None:
    """Refuse to resume a work dir that holds a run with other settings (another student, ...).

    The student is compared by its content (``student_sha256``: :func:`comad.checkpoint.content_sha256`),
    not by its path or its file's bytes. With ``archive`` such a run is moved to
    ``<work_dir>/superseded_<time>/`` instead and this one starts afresh.
    """
    from mmengine.logging import print_log

    from comad.engine.launch import archive_previous_run

    path = work_dir / RUN_RECORD
    if path.is_file():
        old = json.loads(path.read_text())
        diff = {k: (old.get(k), v) for k, v in record.items() if k not in _UNCOMPARED and old.get(k) != v}
        if not diff:
            return
        what = "; ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in diff.items())
        if not archive:
            raise RuntimeError(
                f"work dir {work_dir} holds a run with other settings ({path}): {what}. Pass another --work-dir, "
                f"--archive to move that run aside, or delete that folder to start over.")
        moved = archive_previous_run(work_dir, RUN_OUTPUTS)
        print_log(f"[transfer] {work_dir} held a run with other settings ({what}); "
                  f"{'moved to ' + str(moved) if moved else 'it had no checkpoint, starting afresh'}",
                  logger="current", level=30)
    atomic_write_json(record, path)


#: Recorded in the run record, not compared: a student is identified by its content, not its path.
_UNCOMPARED = ("student",)


def runner_metrics(raw: dict[str, Any]) -> dict[str, float]:
    """Runner.test() output -> {name: float}, evaluator prefixes ('coco/') dropped."""
    out = {}
    for k, v in raw.items():
        try:
            out[k.split("/", 1)[-1]] = float(v)  # python and numpy scalars
        except (TypeError, ValueError):
            continue  # e.g. mmdet's '*_copypaste' strings
    return out


def build_task_runner(name: str, config: Path, request: TaskRequest, cfg: Config, changes: list[str],
                      student_sha256: str):
    """Guard the work dir, pick the checkpoint to resume, build the strict data-only Runner, log the changes.

    Shared by every task on the Runner (dense and ImageNet): ``name`` is the task, ``config`` the file run.
    """
    from mmengine.logging import print_log

    from comad.engine.launch import ComadRunner
    from comad.mm_compat import enable_safe_resume

    cfg.experiment_name = f"{name}_{time.strftime('%Y%m%d_%H%M%S')}_{uuid.uuid4().hex[:6]}"
    request.work_dir.mkdir(parents=True, exist_ok=True)
    _guard_work_dir(request.work_dir, dict(
        task=name, config=str(config), student=str(request.student.resolve()),
        student_sha256=student_sha256, demo=request.demo, max_iters=request.max_iters,
        cfg_options=list(request.cfg_options), seed=_seed(request), world_size=request.world_size), request.archive)
    latest = resume_file(request.work_dir)
    if latest is not None:  # resume from the newest complete checkpoint, not from what last_checkpoint names
        cfg.load_from = str(latest)
        changes.append(f"resume from {latest}")
    enable_safe_resume()
    runner = ComadRunner.from_cfg(cfg)  # strict, data-only resume: the config text in a checkpoint is never run
    for c in changes:
        print_log(f"[transfer] config change: {c}", logger="current")
    print_log(f"[transfer] the config this run runs: {Path(cfg.work_dir) / Path(cfg.filename).name} (mmengine's dump)",
              logger="current")
    return runner


def _config_classes(cfg: Config) -> tuple[str, ...] | None:
    """``train_dataloader.dataset.metainfo.classes`` (through dataset wrappers), or None when not set."""
    ds = cfg.train_dataloader.dataset
    while isinstance(ds, dict) and "metainfo" not in ds and isinstance(ds.get("dataset"), dict):
        ds = ds.dataset
    classes = (ds.get("metainfo") or {}).get("classes") if isinstance(ds, dict) else None
    return tuple(classes) if classes else None


def _warn_effective_batch(protocol: dict[str, Any], resolved: dict[str, Any], world: int, demo: bool) -> None:
    """A run whose effective batch is not the protocol's says so (on the console unless it is a demo, small by design)."""
    from mmengine.logging import print_log

    if not protocol.get("effective_batch") or resolved["effective_batch"] == protocol["effective_batch"]:
        return
    msg = (f"[transfer] effective batch {resolved['effective_batch']} (= {world} GPUs x "
           f"{resolved['batch_per_gpu']} x {resolved['grad_accumulation']}) differs from the protocol's "
           f"{protocol['effective_batch']}; lr kept at {resolved['lr']:g} (linear rule would give "
           f"{resolved['lr'] * resolved['effective_batch'] / protocol['effective_batch']:g}; enable it with "
           f"-- --cfg-options auto_scale_lr.enable=True auto_scale_lr.base_batch_size={protocol['effective_batch']})")
    if demo:
        print_log(msg, logger="current", level=30)
    else:
        notice(msg, 30)


def _test_metrics(task: MMTask, runner: Any) -> tuple[dict[str, float], bool]:
    """(metrics of runner.test(), whether the detector kept no detection); every metric key checked."""
    metrics = runner_metrics(runner.test())
    no_predictions = not metrics and task.units == "fraction"
    if no_predictions:
        # mmdet's CocoMetric returns nothing when the model kept no detection (score_thr): AP is 0 then
        notice(f"[transfer] task {task.name}: the model made no detection on the test set; every AP is 0", 30)
        metrics = {k: 0.0 for k in task.metric_keys}
    missing = [k for k in task.metric_keys if k not in metrics]
    if missing:
        raise RuntimeError(f"task {task.name}: the evaluator returned {sorted(metrics)}, missing {missing}")
    return metrics, no_predictions


def _protocol_as_run(task: MMTask, request: TaskRequest, cfg: Config, resolved: dict[str, Any],
                     load_report: dict[str, Any]) -> dict[str, Any]:
    """The config's protocol statement, overwritten by the values this run really used."""
    protocol = dict(cfg.get("protocol", {}))
    as_run = {k: resolved[k] for k in ("gpus", "batch_per_gpu", "grad_accumulation", "effective_batch", "lr",
                                       "weight_decay", "layer_decay", "drop_path", "pyramid_blocks", "inference")}
    name = protocol.get("name", task.config_path.stem) + (f" [demo: {task.config_for(request).name}]"
                                                           if request.demo else "")
    schedule = protocol.get("schedule", "")
    if request.demo:
        schedule += f"; demo: {resolved['train_loop']['max_iters']} iterations, lr schedule compressed (demo config)"
    if request.max_iters is not None:
        schedule += f"; cut to {resolved['train_loop']['max_iters']} iterations, lr schedule compressed (--max-iters)"
    return dict(protocol, **as_run, name=name, schedule=schedule,
                pos_embed=load_report.get("pos_embed"), missing_keys=load_report.get("missing_keys"),
                unexpected_keys=load_report.get("unexpected_keys"), backbone=resolved["backbone"],
                train_loop=resolved["train_loop"])


def run_mm_task(task: MMTask, request: TaskRequest) -> TaskResult:
    """Check the data, prepare the config, train (resuming), test; returns metrics, provenance and the release."""
    from .mm_release import mm_release

    if request.demo:
        from .mm_demo_data import make_demo_data

        make_demo_data(request.data_root)  # once; a complete set is reused, concurrent makers are safe
    summary = task.check(request.data_root)
    cfg, changes = prepare_config(task, request, train_images=summary.train_images)
    if task.check_classes is not None:  # before the runner: names the file, the names found and expected
        task.check_classes(request.data_root, _config_classes(cfg))
    sha = content_sha256(request.student)
    runner = build_task_runner(task.name, task.config_for(request), request, cfg, changes, sha)
    resolved = resolved_protocol(cfg, request.world_size)
    _warn_effective_batch(dict(cfg.get("protocol", {})), resolved, request.world_size, request.demo)
    with prints_to_log(runner.logger):  # pycocotools prints: to the log file in quiet mode
        runner.train()  # loads the student (the backbone's init_weights), then resumes
        metrics, no_predictions = _test_metrics(task, runner)
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    if getattr(model.backbone, "frozen", False):  # a frozen probe's number is the student's own features'
        model.backbone.assert_unchanged()
    load_report = dict(getattr(model.backbone, "load_report", {}))
    info = dict(protocol_declared=dict(cfg.get("protocol", {})), effective_batch=resolved["effective_batch"],
                data=dict(root=summary.root, train_images=summary.train_images, val_images=summary.val_images),
                config_changes=changes, backbone_load=load_report, log_dir=str(runner.log_dir),
                no_detections=no_predictions, student_sha256=sha)
    return TaskResult(metrics=metrics, config=repo_relative(task.config_for(request)), seed=_seed(request),
                      protocol=_protocol_as_run(task, request, cfg, resolved, load_report), units=task.units, info=info,
                      release=mm_release(task, request, cfg, runner, sha))
