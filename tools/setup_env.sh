#!/usr/bin/env bash
# Idempotent set-up of .venv: torch pair, the pins of pyproject.toml, and mmcv 2.1.0 with
# compiled ops (built once per machine into a wheel cache, then reused).
#   COMAD_VENV         where the venv lives            (default: <repo>/.venv)
#   COMAD_WHEEL_CACHE  where built wheels are kept     (default: ~/.cache/comad/wheels)
#   COMAD_WITH_MM=0    skip the OpenMMLab stack (distillation core only)
#   FORCE_CUDA=1       build mmcv's CUDA ops (GPU machines; see README "Install on a GPU cluster")
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${COMAD_VENV:-$ROOT/.venv}
export COMAD_WHEEL_CACHE=${COMAD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/comad/wheels}
WITH_MM=${COMAD_WITH_MM:-1}
STAMP="$VENV/.comad-setup"
want=$(cat pyproject.toml tools/setup_env.sh tools/build_mmcv.sh | sha256sum | cut -c1-16)-mm$WITH_MM-cuda${FORCE_CUDA:-0}
if [ -x "$VENV/bin/python" ] && [ "$(cat "$STAMP" 2>/dev/null)" = "$want" ]; then
  exit 0  # already set up for this pyproject.toml
fi
echo "[setup] creating/updating $VENV (wheel cache: $COMAD_WHEEL_CACHE)"
[ -x "$VENV/bin/python" ] || "${PYTHON:-python3}" -m venv "$VENV"
PY="$VENV/bin/python"
pin() { "$PY" tools/pins.py "$@"; }
# torch first (mmcv builds against it) and a setuptools that still has pkg_resources.
"$PY" -m pip install -q $(pin torch torchvision setuptools) wheel
if [ "$WITH_MM" = 1 ]; then
  whl=$(bash tools/build_mmcv.sh "$PY")
  "$PY" -m pip install -q "$whl"
  "$PY" -m pip install -q -e ".[mm,demo,test]"
  "$PY" - <<'PY'
import torch
from mmcv.ops import nms, RoIAlign
boxes = torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]])
_, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
out = RoIAlign((2, 2), 1.0, 0)(torch.ones(1, 1, 8, 8), torch.tensor([[0., 0, 0, 4, 4]]))
assert out.shape == (1, 1, 2, 2) and torch.allclose(out, torch.ones_like(out))
print("[setup] mmcv compiled ops OK: nms, RoIAlign")
PY
else
  "$PY" -m pip install -q -e ".[demo,test]"
fi
echo "$want" > "$STAMP"
echo "[setup] done: $VENV"
