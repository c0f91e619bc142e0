#!/usr/bin/env bash
# Prepare NVIDIA DALI for a lent GPU machine that has no DALI and no network (benchmarks/README.md,
# "On a lent GPU"): download the wheels for its Python (default 3.12, manylinux x86-64) and cut
# them into parts of at most 60 MiB, since one device call carries at most 64 MiB. Writes
#   benchmarks/out/dali_whl/part-NN   (one tar stream of the wheels, split)
#   benchmarks/out/dali_whl/MANIFEST  (sha256 of every part; gpu_run.sh checks it)
# Run it in the checkout that makes the device calls (only that checkout travels).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
DIR=benchmarks/out/dali_whl
# DALI and what it needs at run time that the GPU image lacks (versions as pip resolves them here)
WHEELS=("$(python3 tools/pins.py nvidia-dali-cuda130)" nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.3.2.43
        astunparse==1.6.3 gast==0.7.0 optree==0.20.0)
rm -rf "$DIR"
mkdir -p "$DIR/whl"
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    plat+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${plat[@]}" \
    -d "$DIR/whl" "${WHEELS[@]}"
tar -cf - -C "$DIR/whl" . | split -b 60M -d -a 2 - "$DIR/part-"
rm -rf "$DIR/whl"
(cd "$DIR" && sha256sum part-* > MANIFEST)
n=$(ls "$DIR"/part-* | wc -l)
echo "wrote $n parts under $DIR ($(du -sh "$DIR" | cut -f1)); carry one per device call, e.g."
for p in "$DIR"/part-*; do echo "  carry: [\"$p\", \"$DIR/MANIFEST\"]"; done
