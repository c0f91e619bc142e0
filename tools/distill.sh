#!/usr/bin/env bash
# tools/distill.sh [CONFIG] [GPUS] [--work-dir DIR] [--resume] [--verbose] [--cfg-options k=v ...]
# No CONFIG: the embedded demo. GPUS > 1 (or NNODES > 1, or TORCHRUN=1): torchrun (DDP); multi-node with
# NNODES, NODE_RANK, MASTER_ADDR, PORT as in OpenMMLab's dist_train.sh. The console shows a progress
# bar and a summary; the full log is in the work dir (--verbose or COMAD_VERBOSE=1: on the console too).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
CONFIG=$ROOT/benchmark_configs/distill/comad_vit-tiny-demo_1xb16-120it_photos-64.py
case "${1:-}" in ""|-*) ;; *) CONFIG=$1; shift ;; esac
GPUS=1
case "${1:-}" in ""|*[!0-9]*) ;; *) GPUS=$1; shift ;; esac
NNODES=${NNODES:-1}
if [ "$GPUS" -gt 1 ] || [ "$NNODES" -gt 1 ] || [ "${TORCHRUN:-0}" = 1 ]; then  # TORCHRUN=1: torchrun for 1 GPU too
  exec "$PY" -m torch.distributed.run --nnodes="$NNODES" --node_rank="${NODE_RANK:-0}" \
    --master_addr="${MASTER_ADDR:-127.0.0.1}" --master_port="${PORT:-29500}" --nproc_per_node="$GPUS" \
    "$ROOT/tools/train.py" "$CONFIG" --launcher pytorch "$@"
fi
exec "$PY" "$ROOT/tools/train.py" "$CONFIG" "$@"
