"""The task layer: what a benchmark task is asked, what it returns, and where its record is written.

Every task — ImageNet protocols (:mod:`transfer.imagenet.tasks`) and the dense OpenMMLab benchmarks
(``transfer/tasks.py``) — is a :class:`Task` whose ``run`` takes one :class:`TaskRequest` and
returns a :class:`TaskResult` (metrics + provenance); it trains and evaluates, nothing more.
:func:`run_task` runs it and :func:`finish_task` ends it: the metric check and the one writer of
``<work_dir>/metrics.json`` (schema: :mod:`transfer.metrics_io`). Entry points
(``transfer/run.py``, ``tools/linear_probe.py``) only build requests and call :func:`run_task`.

A record holds, besides the schema's keys, the request as run (``max_iters``, ``cfg_options``,
``data_root``, ``work_dir``, ``world_size``), ``git_dirty``, ``duration_s``, the task's own
``TaskResult.info`` keys and, for a task that returns a :class:`~comad.release.Release` (the
dense tasks, the ImageNet fine-tune), ``release``: ``{checkpoint, config, sha256}`` of the files
:func:`finish_task` published into ``<work_dir>/release/``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from comad.release import RELEASE_DIR, Release, publish
from comad.runtime import LAUNCHERS, rank, world_size
from comad.repo import git_dirty, repo_relative

from .metrics_io import make_record, write_metrics

__all__ = ["TaskRequest", "TaskResult", "Task", "task_table", "run_task", "finish_task"]


@dataclass(frozen=True)
class TaskRequest:
    """One task run: which student, on which data, into which work dir, with which edits.

    ``seed=None`` leaves the seed to the task (0 for the dense tasks, the config's ``seed`` for
    the ImageNet ones); ``config`` replaces the task's own benchmark config (ImageNet tasks;
    ``tools/linear_probe.py --config``). ``world_size`` / ``launcher`` say how the processes
    were started (:mod:`comad.runtime`). ``archive``: a work dir holding a run with other
    settings (another student, ...) has that run moved to ``superseded_<time>/`` instead of
    being refused.
    """

    student: Path
    data_root: Path
    work_dir: Path
    max_iters: int | None = None
    demo: bool = False
    cfg_options: tuple[str, ...] = ()
    seed: int | None = None
    world_size: int = field(default_factory=world_size)
    launcher: str = "none"
    config: Path | None = None
    archive: bool = False

    def __post_init__(self) -> None:
        for name in ("student", "data_root", "work_dir"):
            object.__setattr__(self, name, Path(getattr(self, name)))
        if self.config is not None:
            object.__setattr__(self, "config", Path(self.config))
        object.__setattr__(self, "cfg_options", tuple(self.cfg_options))
        if self.launcher not in LAUNCHERS:
            raise ValueError(f"TaskRequest.launcher {self.launcher!r}: expected one of {LAUNCHERS}")


@dataclass
class TaskResult:
    """What a task returns: its metrics and the provenance that goes into its record.

    ``config``: the benchmark config run (repository-relative); ``seed``: the seed used;
    ``protocol``: the settings that define the number; ``units``: 'percent' or 'fraction' (mmdet);
    ``name``: the record's row name (None: from the student path); ``info``: further record keys;
    ``release``: the trained model to publish (:mod:`comad.release`), or None.
    """

    metrics: dict[str, float]
    config: str
    seed: int
    protocol: dict[str, Any] = field(default_factory=dict)
    units: str = "percent"
    name: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    release: Release | None = None


@dataclass(frozen=True)
class Task:
    """One row of the task table: ``run(request) -> TaskResult`` and the metrics it must report."""

    name: str
    run: Callable[[TaskRequest], TaskResult]
    metric_keys: tuple[str, ...] = ()
    description: str = ""


def task_table(*groups: dict[str, Task]) -> dict[str, Task]:
    """Merge groups of tasks into one table (in order); a name defined twice is an error."""
    table: dict[str, Task] = {}
    for group in groups:
        for name, task in group.items():
            if name in table:
                raise ValueError(f"task table: task '{name}' is defined twice ({table[name].description!r} and "
                                 f"{task.description!r})")
            if name != task.name:
                raise ValueError(f"task table: entry '{name}' holds task '{task.name}'")
            table[name] = task
    return table


def run_task(task: Task, request: TaskRequest) -> dict[str, Any]:
    """Run ``task`` on ``request`` and finish it (:func:`finish_task`); returns the record."""
    started = time.time()
    request.work_dir.mkdir(parents=True, exist_ok=True)
    result = task.run(request)
    return finish_task(task, request, result, duration_s=time.time() - started)


def finish_task(task: Task, request: TaskRequest, result: TaskResult, duration_s: float) -> dict[str, Any]:
    """The end of every task: check its metrics, publish its release, build its record, write ``metrics.json``.

    Every process gets the record; only rank 0 publishes the release (``<work_dir>/release/``,
    :func:`comad.release.publish`) and writes the record, whose ``release`` key names the files;
    the others wait for the writes when a process group is up. A task that raised never gets
    here, so its earlier record is kept. What every task does once it has its result belongs here.
    """
    missing = [k for k in task.metric_keys if k not in result.metrics]
    if missing:
        raise RuntimeError(f"task {task.name} returned metrics {sorted(result.metrics)}, missing {missing}")
    extra = dict(result.info)
    if result.release is not None and rank() == 0:
        extra["release"] = publish(result.release, request.work_dir / RELEASE_DIR)
    record = make_record(
        task.name, result.metrics, student=repo_relative(request.student), config=result.config, seed=result.seed,
        demo=request.demo, name=result.name, protocol=result.protocol, units=result.units,
        max_iters=request.max_iters, cfg_options=list(request.cfg_options), data_root=str(request.data_root),
        work_dir=str(request.work_dir), git_dirty=git_dirty(), duration_s=round(duration_s, 1),
        world_size=request.world_size, **extra)
    if rank() == 0:
        write_metrics(record, request.work_dir)
    _barrier()
    return record


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
