#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded demo data, on this CPU (a DEMO, not results):
# distil a ViT-Tiny from three small random teachers in the official layouts, then transfer it
# (ADE20K / COCO-layout mini sets, ImageNet-layout digits), print the table, and draw each dense
# task's predictions on a test image (tools/infer.py, from the task's release files); the
# distillation's gating is drawn over three demo photos (tools/gating_maps.py).
#
#   tools/demo.sh [--verbose]     (or COMAD_VERBOSE=1: the full mmengine stream on the console)
#
# Run again, it reuses what is done: the distillation is redone (the earlier one archived), the
# transfer tasks of an identical student are evaluated again from their checkpoints, those of a
# changed student are archived (--archive) and run afresh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
for arg in "$@"; do
  case "$arg" in
    --verbose) export COMAD_VERBOSE=1 ;;
    *) echo "usage: tools/demo.sh [--verbose]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
TRANSFER=work_dirs/transfer-demo/demo_distill
bash tools/distill.sh --work-dir work_dirs/demo_distill
bash tools/run_transfer.sh --demo --archive --work-dir "$TRANSFER" \
  ade20k coco imagenet-linear-cached imagenet-knn
"$PY" tools/gating_maps.py benchmark_configs/distill/comad_vit-tiny-demo_1xb16-120it_photos-64.py \
  work_dirs/demo_distill --photos chelsea,coffee,astronaut --out work_dirs/demo_distill/gating_maps.png
for task in ade20k coco; do
  "$PY" tools/infer.py --work-dir "$TRANSFER/$task"   # detections drawn from score 0.3 on
done
