"""The benchmark task table of ``python -m transfer.run``.

Every task is a callable with one signature::

    run(student: Path, data_root: Path, work_dir: Path, max_iters: int | None, demo: bool,
        cfg_options: list[str]) -> dict[str, float] | TaskResult

returning its metrics (a plain dict, or a :class:`TaskResult` with extra provenance that goes
into the metrics JSON). The runner (``transfer.run``) resolves the student, makes the demo data,
creates ``work_dir`` and writes ``work_dir/metrics.json``; the task trains and evaluates.

The dense tasks (``ade20k``, ``coco``, ``coco-lsj``) are :class:`MMTask` objects (a benchmark
config + a dataset check). ImageNet tasks come from ``comad.eval.tasks.IMAGENET_TASKS``
(``{name: callable}``), imported lazily: when that module does not exist they are absent;
any other error while importing it propagates.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from .datasets import DataSummary, check_ade20k, check_coco

__all__ = ["REPO_ROOT", "TaskResult", "TaskSpec", "DemoSpec", "MMTask", "MM_TASKS", "IMAGENET_TASKS_MODULE",
           "get_tasks"]

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGENET_TASKS_MODULE = "comad.eval.tasks"

TaskRunner = Callable[[Path, Path, Path, "int | None", bool, "list[str]"], "Mapping[str, Any] | TaskResult"]


@dataclass
class TaskResult:
    """Metrics plus provenance (config, protocol, backbone load report, ...) for the metrics JSON."""

    metrics: dict[str, float]
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskSpec:
    """One row of the task table."""

    name: str
    run: TaskRunner
    metric_keys: tuple[str, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class DemoSpec:
    """The demo override of a benchmark config: image sizes x ``size_factor``, a short run.

    ``lr_scale`` multiplies the config's lr (a few dozen iterations from scratch heads need
    more than the 160k / 12-epoch protocols); ``warmup_iters`` sets the end of the first
    (warm-up) scheduler after compression; ``options`` are extra dotted config edits
    (e.g. fewer proposals for images with a handful of objects), merged like --cfg-options.
    """

    size_factor: float = 0.25
    batch_per_gpu: int = 4
    iters: int = 40
    lr_scale: float = 1.0
    warmup_iters: int | None = None
    options: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True)
class MMTask:
    """An OpenMMLab benchmark: a config under ``benchmark_configs/`` and a dataset check."""

    name: str
    config: str
    check: Callable[[Path], DataSummary]
    metric_keys: tuple[str, ...]
    demo: DemoSpec = DemoSpec()
    units: str = "percent"  # of the evaluator's numbers: mmseg's IoUMetric gives percent, mmdet's CocoMetric fractions

    @property
    def config_path(self) -> Path:
        return REPO_ROOT / self.config

    def __call__(self, student: Path, data_root: Path, work_dir: Path, max_iters: int | None, demo: bool,
                 cfg_options: list[str], seed: int = 0) -> TaskResult:
        from .mm_runner import run_mm_task

        return run_mm_task(self, student, data_root, work_dir, max_iters, demo, cfg_options, seed=seed)


_SEG_KEYS = ("mIoU", "aAcc", "mAcc")
_DET_KEYS = tuple(f"{k}_{m}" for k in ("bbox", "segm") for m in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"))

# Demo detection: the demo images hold 1-20 objects, so far fewer proposals / sampled RoIs /
# detections than COCO's 1000 / 512 / 100 are enough; that keeps a CPU step at a few seconds.
_DET_DEMO_OPTIONS = (
    ("model.train_cfg.rpn_proposal.nms_pre", 400), ("model.train_cfg.rpn_proposal.max_per_img", 200),
    ("model.train_cfg.rcnn.sampler.num", 64), ("model.test_cfg.rpn.nms_pre", 400),
    ("model.test_cfg.rpn.max_per_img", 200), ("model.test_cfg.rcnn.max_per_img", 30),
    ("model.test_cfg.rcnn.score_thr", 0.0),  # rank all kept boxes (COCO AP needs no threshold)
)
# lr x2 (2e-4): with batch 2, x10 diverges within ~40 iterations (loss_cls > 10) and x4 / x1 end lower
# on the demo val set (bbox mAP 0.008 / 0.016 vs 0.027 for x2 after 120 iterations).
_DET_DEMO = DemoSpec(size_factor=0.25, batch_per_gpu=2, iters=120, lr_scale=2.0, warmup_iters=15, options=_DET_DEMO_OPTIONS)

MM_TASKS: dict[str, MMTask] = {
    "ade20k": MMTask("ade20k", "benchmark_configs/ade20k/upernet_comad-vit-t_8xb2-160k_ade20k-512x512.py",
                     check_ade20k, _SEG_KEYS, DemoSpec(size_factor=0.25, batch_per_gpu=2, iters=40, lr_scale=10.0)),
    "coco": MMTask("coco", "benchmark_configs/coco/mask-rcnn_comad-vit-t-sfp_8xb2-1x_coco-1333x800.py",
                   check_coco, _DET_KEYS, _DET_DEMO, units="fraction"),
    "coco-lsj": MMTask("coco-lsj", "benchmark_configs/coco/mask-rcnn_comad-vit-t-sfp_8xb8-lsj-100e_coco-1024x1024.py",
                       check_coco, _DET_KEYS, _DET_DEMO, units="fraction"),
}


def _imagenet_tasks() -> dict[str, TaskRunner]:
    try:
        mod = importlib.import_module(IMAGENET_TASKS_MODULE)
    except ModuleNotFoundError as e:
        # Only the module itself (or its package) being absent means "no ImageNet tasks".
        if e.name in (IMAGENET_TASKS_MODULE, IMAGENET_TASKS_MODULE.rsplit(".", 1)[0]):
            return {}
        raise
    tasks = getattr(mod, "IMAGENET_TASKS", None)
    if not isinstance(tasks, Mapping):
        raise TypeError(f"{IMAGENET_TASKS_MODULE}.IMAGENET_TASKS must be a dict {{name: callable}}, "
                        f"found {type(tasks).__name__}")
    return dict(tasks)


def get_tasks() -> dict[str, TaskSpec]:
    """The task table: the dense benchmarks, then the ImageNet tasks when their module exists."""
    table = {name: TaskSpec(name, task, task.metric_keys, f"{task.config}") for name, task in MM_TASKS.items()}
    for name, fn in _imagenet_tasks().items():
        if name in table:
            raise ValueError(f"{IMAGENET_TASKS_MODULE}.IMAGENET_TASKS redefines task '{name}'")
        if not callable(fn):
            raise TypeError(f"{IMAGENET_TASKS_MODULE}.IMAGENET_TASKS['{name}'] is not callable")
        table[name] = TaskSpec(name, fn, tuple(getattr(fn, "metric_keys", ())), getattr(fn, "__doc__", "") or "")
    return table
