#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded demo data, on this CPU (a DEMO, not results):
# distil a ViT-Tiny from three small random teachers in the official layouts, then transfer it
# (ADE20K / COCO-layout mini sets, ImageNet-layout digits) and print the table.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/distill.sh --work-dir work_dirs/demo_distill
bash tools/run_transfer.sh --demo ade20k coco imagenet-linear-cached imagenet-knn
