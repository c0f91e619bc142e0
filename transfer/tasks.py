"""The benchmark task table of ``python -m transfer.run`` (``tools/run_transfer.sh``).

``TASKS[name]`` is a :class:`transfer.runner.Task`: ``run(request: TaskRequest) -> TaskResult``.
The dense tasks (``ade20k``, ``ade20k-tinymim``, ``ade20k-linear``, ``ade20k-linear4``, ``coco``, ``coco-lsj``) are the :class:`~transfer.mm_runner.MMTask`
objects of :data:`MM_TASKS` (a benchmark config + a dataset check + a demo override); the
ImageNet tasks are :data:`transfer.imagenet.tasks.IMAGENET_TASKS`. The runner
(:func:`transfer.runner.run_task`) runs a task and writes its ``metrics.json``.
"""
from __future__ import annotations

from .runner import Task, task_table
from comad.repo import REPO_ROOT
from .imagenet.tasks import IMAGENET_TASKS

from .datasets import check_ade20k, check_coco, check_coco_classes
from .mm_runner import DemoSpec, MMTask

__all__ = ["REPO_ROOT", "DemoSpec", "MMTask", "MM_TASKS", "TASKS"]

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
    "ade20k-tinymim": MMTask("ade20k-tinymim",
                             "benchmark_configs/ade20k/upernet_comad-vit-t-tinymim_8xb2-160k_ade20k-512x512.py",
                             check_ade20k, _SEG_KEYS, DemoSpec(size_factor=0.25, batch_per_gpu=2, iters=40, lr_scale=10.0)),
    "ade20k-linear": MMTask("ade20k-linear", "benchmark_configs/ade20k/linear_comad-vit-t-frozen_8xb2-40k_ade20k-512x512.py",
                            check_ade20k, _SEG_KEYS, DemoSpec(size_factor=0.25, batch_per_gpu=2, iters=40)),
    "ade20k-linear4": MMTask("ade20k-linear4",
                             "benchmark_configs/ade20k/linear4_comad-vit-t-frozen_8xb2-40k_ade20k-512x512.py",
                             check_ade20k, _SEG_KEYS, DemoSpec(size_factor=0.25, batch_per_gpu=2, iters=40)),
    "coco": MMTask("coco", "benchmark_configs/coco/mask-rcnn_comad-vit-t-sfp_8xb2-1x_coco-1333x800.py",
                   check_coco, _DET_KEYS, _DET_DEMO, units="fraction", check_classes=check_coco_classes),
    "coco-lsj": MMTask("coco-lsj", "benchmark_configs/coco/mask-rcnn_comad-vit-t-vitdet_8xb8-lsj-100e_coco-1024x1024.py",
                       check_coco, _DET_KEYS, _DET_DEMO, units="fraction", check_classes=check_coco_classes),
}

#: Every task ``transfer.run`` knows: the dense benchmarks, then the ImageNet protocols.
TASKS: dict[str, Task] = task_table({name: Task(name, t.run, t.metric_keys, t.config) for name, t in MM_TASKS.items()},
                                    IMAGENET_TASKS)
