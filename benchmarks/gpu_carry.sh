#!/usr/bin/env bash
# Assemble what a lent GPU machine needs and lacks (benchmarks/README.md, "On a lent GPU"), under
# the git-ignored .whl/, and print its size (one device call carries at most 64 MiB with the tree):
#   - the OpenMMLab stack and its pure-Python / binary dependencies for the machine's Python
#     (PYV, default 3.12; manylinux x86-64 wheels): mmengine, mmsegmentation, mmdet, pycocotools,
#     shapely, terminaltables, addict, yapf, ftfy, regex, ...
#   - mmcv's source distribution (benchmarks/gpu_stages.py's `build` stage compiles its CUDA ops there)
# DALI's wheels are larger and go in parts over several calls (benchmarks/dali_wheels.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${PYV:-3.12}
DIR=.whl
mkdir -p "$DIR"
pin() { python3 tools/pins.py "$@"; }
plat=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64 any; do plat+=(--platform "$p"); done
# shellcheck disable=SC2046
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYV" --implementation cp "${plat[@]}" \
    -d "$DIR" $(pin mmengine mmsegmentation mmdet pycocotools ftfy regex) \
    addict yapf termcolor terminaltables shapely platformdirs tomli wcwidth prettytable
python3 -m pip download -q --no-deps --no-binary :all: -d "$DIR/src" "$(pin mmcv)"
echo "carry set under $DIR: $(du -sh "$DIR" | cut -f1) in $(find "$DIR" -type f | wc -l) files (limit 64 MiB per call with the tree)"
