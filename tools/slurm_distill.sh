#!/usr/bin/env bash
# tools/slurm_distill.sh PARTITION JOB_NAME CONFIG [--work-dir DIR] [--resume] [--cfg-options ...]
# GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (10), SRUN_ARGS as in OpenMMLab.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PARTITION=$1; JOB_NAME=$2; CONFIG=$3; shift 3
GPUS=${GPUS:-8}; GPUS_PER_NODE=${GPUS_PER_NODE:-8}; CPUS_PER_TASK=${CPUS_PER_TASK:-10}
exec srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
  --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
  "${PYTHON:-$ROOT/.venv/bin/python}" -u "$ROOT/tools/train.py" "$CONFIG" --launcher slurm "$@"
