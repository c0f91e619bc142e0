#!/usr/bin/env bash
# Print the path of an mmcv 2.1.0 wheel with compiled ops for the torch in venv python $1,
# building it from PyPI's source distribution into the cache when none is there yet.
# The cache key holds the torch version and the device (cpu/cuda): a wheel only loads
# against the torch it was built with.
set -euo pipefail
PY=$1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MMCV=$("$PY" "$ROOT/tools/pins.py" mmcv)          # mmcv==2.1.0
ver=${MMCV#mmcv==}
torch_ver=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')
dev=cpu; [ "${FORCE_CUDA:-0}" = 1 ] && dev=cuda
dir="$COMAD_WHEEL_CACHE/mmcv-$ver/torch-$torch_ver-$dev"
found=$(ls "$dir"/mmcv-"$ver"-*.whl 2>/dev/null | head -n1 || true)
if [ -n "$found" ]; then echo "$found"; exit 0; fi
mkdir -p "$dir"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
echo "[mmcv] no cached wheel in $dir: building $MMCV with ops from source (~30 min on 2 cores)" >&2
"$PY" -m pip download -q --no-deps --no-binary :all: "$MMCV" -d "$work" >&2
tar -xzf "$work"/mmcv-"$ver".tar.gz -C "$work"
src="$work/mmcv-$ver"
# torch >= 2.10 headers refuse anything older than C++20, mmcv 2.1.0 hard-codes C++17.
echo "[mmcv] patching $src/setup.py: -std=c++17 -> -std=c++20 (torch $torch_ver headers need C++20)" >&2
sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
grep -n 'std=c++' "$src/setup.py" >&2 || true
(cd "$src" && MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
   "$PY" -m pip wheel -q --no-build-isolation --no-deps . -w "$work/dist" >&2)
whl=$(ls "$work"/dist/mmcv-*.whl)
# Debug info is 95% of the wheel: strip it from the extension and repack.
"$PY" -m wheel unpack -d "$work/unp" "$whl" >&2
find "$work/unp" -name '_ext*.so' -exec strip --strip-debug {} +
"$PY" -m wheel pack -d "$work/packed" "$work"/unp/mmcv-"$ver" >&2
tmp="$dir/.tmp.$$"; mkdir -p "$tmp"; cp "$work"/packed/*.whl "$tmp/"
mv "$tmp"/*.whl "$dir/"; rmdir "$tmp"
ls "$dir"/mmcv-"$ver"-*.whl | head -n1
