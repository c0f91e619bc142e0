"""The benchmark task table of ``python -m transfer.run`` (``tools/run_transfer.sh``).

``TASKS[name]`` is a :class:`transfer.runner.Task`: ``run(request: TaskRequest) -> TaskResult``.
The dense tasks (``ade20k``, ``ade20k-tinymim``, ``ade20k-linear``, ``ade20k-linear4``, ``coco``, ``coco-lsj``) are the :class:`~transfer.mm_runner.MMTask`
objects of :data:`MM_TASKS` (a benchmark config, its demo config and a dataset check); the
ImageNet tasks are :data:`transfer.imagenet.tasks.IMAGENET_TASKS`. The runner
(:func:`transfer.runner.run_task`) runs a task and writes its ``metrics.json``.
"""
from __future__ import annotations

from .runner import Task, task_table
from comad.repo import REPO_ROOT
from .imagenet.tasks import IMAGENET_TASKS

from .datasets import check_ade20k, check_coco, check_coco_classes
from .mm_runner import MMTask

__all__ = ["REPO_ROOT", "MMTask", "MM_TASKS", "TASKS"]

_SEG_KEYS = ("mIoU", "aAcc", "mAcc")
_DET_KEYS = tuple(f"{k}_{m}" for k in ("bbox", "segm") for m in ("mAP", "mAP_50", "mAP_75", "mAP_s", "mAP_m", "mAP_l"))

_ADE = "benchmark_configs/ade20k/"
_COCO = "benchmark_configs/coco/"
MM_TASKS: dict[str, MMTask] = {
    "ade20k": MMTask("ade20k", _ADE + "upernet_comad-vit-t_8xb2-160k_ade20k-512x512.py",
                     _ADE + "demo/upernet_comad-vit-t_1xb2-40it_ade20k-demo-128x128.py", check_ade20k, _SEG_KEYS),
    "ade20k-tinymim": MMTask("ade20k-tinymim", _ADE + "upernet_comad-vit-t-tinymim_8xb2-160k_ade20k-512x512.py",
                             _ADE + "demo/upernet_comad-vit-t-tinymim_1xb2-40it_ade20k-demo-128x128.py",
                             check_ade20k, _SEG_KEYS),
    "ade20k-linear": MMTask("ade20k-linear", _ADE + "linear_comad-vit-t-frozen_8xb2-40k_ade20k-512x512.py",
                            _ADE + "demo/linear_comad-vit-t-frozen_1xb2-40it_ade20k-demo-128x128.py",
                            check_ade20k, _SEG_KEYS),
    "ade20k-linear4": MMTask("ade20k-linear4", _ADE + "linear4_comad-vit-t-frozen_8xb2-40k_ade20k-512x512.py",
                             _ADE + "demo/linear4_comad-vit-t-frozen_1xb2-40it_ade20k-demo-128x128.py",
                             check_ade20k, _SEG_KEYS),
    "coco": MMTask("coco", _COCO + "mask-rcnn_comad-vit-t-sfp_8xb2-1x_coco-1333x800.py",
                   _COCO + "demo/mask-rcnn_comad-vit-t-sfp_1xb2-120it_coco-demo-333x200.py",
                   check_coco, _DET_KEYS, units="fraction", check_classes=check_coco_classes),
    "coco-lsj": MMTask("coco-lsj", _COCO + "mask-rcnn_comad-vit-t-vitdet_8xb8-lsj-100e_coco-1024x1024.py",
                       _COCO + "demo/mask-rcnn_comad-vit-t-vitdet_1xb2-120it_coco-demo-256x256.py",
                       check_coco, _DET_KEYS, units="fraction", check_classes=check_coco_classes),
}

#: Every task ``transfer.run`` knows: the dense benchmarks, then the ImageNet protocols.
TASKS: dict[str, Task] = task_table({name: Task(name, t.run, t.metric_keys, t.config) for name, t in MM_TASKS.items()},
                                    IMAGENET_TASKS)
