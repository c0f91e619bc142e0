#!/usr/bin/env bash
# `make demo`: the whole pipeline on the embedded demo data, on this CPU.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/distill.sh --work-dir work_dirs/demo_distill
