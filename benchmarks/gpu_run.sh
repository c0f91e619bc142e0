#!/usr/bin/env bash
# Distillation throughput on a lent H100 / H200 (see benchmarks/README.md), one call, < ~8 min.
#
# Carry with the call (both are git-ignored):
#   .whl                       mmengine + its pure-Python deps (the GPU image has no mmengine)
#   benchmarks/out/photos320   the demo JPEGs (the GPU image has no scikit-image / scikit-learn
#                              to make them; made here with make_demo_imagefolder, 480 files)
# Writes under $OUT (or benchmarks/out/gpu): benchmark_distill.{csv,json,txt}, log.txt, env.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${OUT:-benchmarks/out/gpu}"
mkdir -p "$OUT_DIR"
export PYTHONPATH="$PWD"

# 1. carried wheels (pure Python): pip if present, else unzip them (a wheel is a zip archive)
if compgen -G ".whl/*.whl" > /dev/null; then
    if ! python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl 2> "$OUT_DIR/pip.txt"; then
        echo "pip failed (see pip.txt); unzipping the wheels instead"
        for w in .whl/*.whl; do python3 -m zipfile -e "$w" /tmp/site; done
    fi
    export PYTHONPATH="/tmp/site:$PWD"
fi
python3 -c "import comad.distiller" 2>&1 | tail -1 | sed 's/^/import comad.distiller: /'

# 2. the JPEGs: carried, else made here (needs scikit-image + scikit-learn)
DATA=benchmarks/out/photos320
if [ ! -d "$DATA/train" ]; then
    DATA=/tmp/comad_photos320
    python3 -c "from comad.data import make_demo_imagefolder as m; m('$DATA', img_size=320, n_per_image=48, n_val_per_image=0)" \
        || { echo "no JPEGs: carry benchmarks/out/photos320"; exit 2; }
fi

{
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv
    nproc
    python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
} > "$OUT_DIR/env.txt" 2>&1

# 3. eager rows at 256 / 512 (512 is the configs' per-GPU batch), then the rows with +compile at 512
#    (the bf16-teacher one first: a time limit cuts the last), then a profile of every shipped
#    variant. Results are written after every row, so a cut run keeps what it measured.
#    BENCH_ROWS replaces the row options (e.g. a shorter rerun).
ROWS=${BENCH_ROWS:-"--batches 256,512 --variants naive,shipped,shipped+bf16t,shipped+bf16t+compile,shipped+compile
    --e2e-variants shipped,shipped+bf16t+compile --compile-batches 512"}
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-450}" python3 tools/benchmark_distill.py --device cuda $ROWS --profile \
    --steps 10 --e2e-steps 20 --warmup 3 --data "$DATA" --out "$OUT_DIR" \
    --teachers-dir /tmp/comad_bench_teachers 2>&1 | grep -v "^USDT:" | tee "$OUT_DIR/log.txt"
rc=${PIPESTATUS[0]}
echo "benchmark exit code $rc"
exit "$rc"
