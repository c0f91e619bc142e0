#!/usr/bin/env bash
# The same as tools/run_transfer.sh, one process per GPU under SLURM (srun), like OpenMMLab's
# tools/slurm_train.sh:
#
#   GPUS=8 tools/run_transfer_slurm.sh PARTITION JOB_NAME [run_transfer options] TASK... [-- --cfg-options ...]
#
# Environment: GPUS (total, default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5), SRUN_ARGS (extra
# srun options, e.g. "--quotatype=auto"), MASTER_PORT (29500). Do not pass --gpus: the world
# size is SLURM's.
set -euo pipefail
if [ $# -lt 3 ]; then
    sed -n '2,10p' "$0" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
shift 2
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || { echo "run_transfer_slurm.sh: no $PY; run 'make setup' first (or set PYTHON)" >&2; exit 2; }
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-$((GPUS < 8 ? GPUS : 8))}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
# shellcheck disable=SC2086  # SRUN_ARGS is a list of options
exec srun -p "$PARTITION" --job-name="$JOB_NAME" --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "$PY" -u -m transfer.run --launcher slurm "$@"
