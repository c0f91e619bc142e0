#!/usr/bin/env bash
# Train + evaluate the CoMAD student on dense transfer benchmarks and ImageNet tasks (the task
# table: transfer/tasks.py), one task after the other.
#
#   tools/run_transfer.sh [--student CKPT] [--gpus N] [--data-root DIR] [--work-dir DIR]
#                         [--max-iters N] [--demo] [--seed S] TASK... [-- --cfg-options k=v ...]
#
# TASK: ade20k | coco | coco-lsj (| imagenet-ft | imagenet-linear | imagenet-knn).
# Without --student: the student named by work_dirs/LATEST_STUDENT (written by tools/distill.sh).
# --gpus N > 1 runs under torchrun on this node; for SLURM see tools/run_transfer_slurm.sh.
# Everything is parsed by `python -m transfer.run` (see transfer/run.py).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || { echo "run_transfer.sh: no $PY; run 'make setup' first (or set PYTHON)" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "$PY" -m transfer.run "$@"
