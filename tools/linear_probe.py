#!/usr/bin/env python
"""Probe a student on ImageNet-1K: MAE linear probe, cached linear probe, or k-NN (or fine-tune).

    tools/linear_probe.py STUDENT [--protocol mae|cached|knn|finetune] [--config CFG]
                          [--data-root data] [--work-dir DIR] [--demo] [--max-iters N]
                          [--cfg-options key=value ...]

STUDENT: student.safetensors / student.pth from comad/export.py, or any timm ViT state dict.
Data: <data-root>/imagenet/{train,val}/<class>/*.JPEG; --demo uses real digits instead.
Multi-GPU (mae, finetune): torchrun --nproc_per_node=8 tools/linear_probe.py ...
Writes <work-dir>/metrics.json (see results/README.md) and prints the metrics.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from transfer.metrics_io import student_name  # noqa: E402
from transfer.runner import TaskRequest, run_task  # noqa: E402
from transfer.imagenet.tasks import IMAGENET_TASKS  # noqa: E402

PROTOCOLS = {"mae": "imagenet-linear", "cached": "imagenet-linear-cached", "knn": "imagenet-knn", "finetune": "imagenet-ft"}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("student", type=Path)
    p.add_argument("--protocol", choices=sorted(PROTOCOLS), default="cached")
    p.add_argument("--config", type=Path, default=None, help="benchmark config (default: the protocol's config)")
    p.add_argument("--data-root", type=Path, default=REPO / "data")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="default work_dirs/<student name>/<task>[-demo]")
    p.add_argument("--demo", action="store_true", help="the task's demo config (benchmark_configs/imagenet/demo/) on real "
                   "digits in ImageFolder layout instead of ImageNet")
    p.add_argument("--max-iters", type=int, default=None)
    p.add_argument("--cfg-options", nargs="+", default=[], metavar="KEY=VALUE")
    a = p.parse_args(argv)
    task = PROTOCOLS[a.protocol]
    work_dir = a.work_dir or REPO / "work_dirs" / student_name(a.student) / (task + ("-demo" if a.demo else ""))
    request = TaskRequest(student=a.student, data_root=a.data_root, work_dir=work_dir, max_iters=a.max_iters,
                          demo=a.demo, cfg_options=tuple(a.cfg_options), config=a.config)
    record = run_task(IMAGENET_TASKS[task], request)
    print(json.dumps(dict(task=task, work_dir=str(work_dir), metrics=record["metrics"]), indent=2))
    return 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("linear_probe", main)
