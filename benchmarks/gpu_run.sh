#!/usr/bin/env bash
# Distillation throughput on a lent H100 / H200 (see benchmarks/README.md), one call, < ~8 min.
#
#   bash benchmarks/gpu_run.sh [data|step]
#     data (default): the data paths of issue 16 on ImageNet-sized JPEGs at batch 512 with the
#                     configs' CUDA step (shipped+compile): model, e2e (torch, 12 DataLoader
#                     workers), e2e-dali (when DALI is there), decode-cpu (one core)
#     step:           the step rows of issue 7 (naive / shipped / +bf16t / +compile, profiles)
#   BENCH_ROWS replaces the row options; BENCH_TIMEOUT the time limit (s).
#
# Carry with the call (all git-ignored):
#   .whl                          mmengine + its pure-Python deps (the GPU image has no mmengine)
#   benchmarks/out/imagenet_like  the ImageNet-sized JPEGs (else made here from the packaged photos)
#   benchmarks/out/dali_whl       DALI's wheels in parts (benchmarks/dali_wheels.sh), carried over
#                                 several calls while the machine stays warm; installed when complete
# Writes under $OUT (or benchmarks/out/gpu): benchmark_distill.{csv,json,txt}, log.txt, env.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
SET=${1:-data}
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

# 2. DALI: the parts of benchmarks/dali_wheels.sh, when every one has arrived
DALI_DIR=benchmarks/out/dali_whl
if [ -f "$DALI_DIR/MANIFEST" ]; then
    if (cd "$DALI_DIR" && sha256sum -c --quiet MANIFEST); then
        mkdir -p /tmp/dali_whl && cat "$DALI_DIR"/part-* | tar -xf - -C /tmp/dali_whl \
            && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site /tmp/dali_whl/*.whl \
                2>> "$OUT_DIR/pip.txt"
        export PYTHONPATH="/tmp/site:$PWD"
    else
        echo "DALI: parts missing or damaged under $DALI_DIR (sha256sum -c MANIFEST failed): no DALI"
    fi
fi
DALI_OPT=()
if python3 -c "import nvidia.dali" 2> /dev/null; then
    DALI_OPT=(--dali)
    if [ "$SET" = data ]; then  # the mixed decoder against DALI's CPU mode (one test)
        python3 -m pytest -q -p no:cacheprovider tests/test_data_dali.py -k gpu_mixed 2>&1 | tail -15 \
            | tee "$OUT_DIR/dali_gpu_test.txt"
    fi
else
    echo "DALI is not installed here: no e2e-dali rows (benchmarks/README.md says how to bring it)"
fi

# 3. the JPEGs: carried, else made here (needs scikit-image + scikit-learn)
if [ "$SET" = step ]; then
    DATA=benchmarks/out/photos320 MAKE="from comad.data import make_demo_imagefolder as m; m('/tmp/comad_photos320', img_size=320, n_per_image=48, n_val_per_image=0)" TMP=/tmp/comad_photos320
else
    DATA=benchmarks/out/imagenet_like MAKE="from comad.data.imagenet_like import make_imagenet_like as m; m('/tmp/comad_imagenet_like', n_per_photo=48)" TMP=/tmp/comad_imagenet_like
fi
if [ ! -d "$DATA/train" ]; then
    DATA=$TMP
    python3 -c "$MAKE" || { echo "no JPEGs: carry them (benchmarks/README.md)"; exit 2; }
fi

{
    nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu --format=csv
    nproc
    uptime
    python3 -c "import torch, torchvision, timm; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__)"
    python3 -c "import nvidia.dali as d; print('DALI', d.__version__)" 2>&1 | tail -1
} > "$OUT_DIR/env.txt" 2>&1

# 4. the rows. step: eager rows at 256 / 512 (512 is the configs' per-GPU batch), then the rows with
#    +compile at 512 (the bf16-teacher one first: a time limit cuts the last), then a profile of every
#    shipped variant. data: one batch size, the configs' step, each data path. Results are written
#    after every row, so a cut run keeps what it measured.
if [ "$SET" = step ]; then
    ROWS=${BENCH_ROWS:-"--batches 256,512 --variants naive,shipped,shipped+bf16t,shipped+bf16t+compile,shipped+compile
        --e2e-variants shipped,shipped+bf16t+compile --compile-batches 512"}
    OPTS=(--profile)
else
    ROWS=${BENCH_ROWS:-"--batches 512 --variants shipped+compile --workers 12 --prefetch 2 --decode-rate"}
    OPTS=("${DALI_OPT[@]}")
fi
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-450}" python3 benchmarks/benchmark_distill.py --device cuda $ROWS "${OPTS[@]}" \
    --steps 10 --e2e-steps 20 --warmup 3 --data "$DATA" --out "$OUT_DIR" \
    --teachers-dir /tmp/comad_bench_teachers 2>&1 | grep -v "^USDT:" | tee "$OUT_DIR/log.txt"
rc=${PIPESTATUS[0]}
echo "benchmark exit code $rc"
exit "$rc"
