"""Export the student of a distillation checkpoint for transfer (timm safetensors + mm checkpoint).

    python tools/export_student.py WORK_DIR_OR_CHECKPOINT [--out DIR] [--img-size 224] [--latest]

Every distillation run already does this at its end (comad.engine.ComadRunHook); use this tool
for an intermediate checkpoint or a run that was stopped. The student's architecture is read
recorded in the checkpoint as plain data (``meta.student_arch``); the config text mmengine also
stores there is never executed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comad.export import LATEST_POINTER, export_student  # noqa: E402
from comad.cli import UsageError  # noqa: E402
from comad.io import CheckpointError  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a work dir (its newest iter_*.pth) or a checkpoint file")
    p.add_argument("--out", help="output folder (default: <checkpoint dir>/student_<iter>)")
    p.add_argument("--img-size", type=int, default=224, help="resolution of the exported pos_embed (default 224)")
    p.add_argument("--latest", action="store_true", help=f"also point work_dirs/{LATEST_POINTER} at it")
    a = p.parse_args()

    from comad.checkpoint import build_vit, load_strict
    from comad.engine.launch import latest_checkpoint
    from comad.mm_compat import load_local_checkpoint

    src = Path(a.src)
    ckpt_path = latest_checkpoint(src) if src.is_dir() else src
    if ckpt_path is None:
        raise UsageError(f"no checkpoint (iter_*.pth) in {src}")
    try:
        ckpt = load_local_checkpoint(str(ckpt_path))
        arch = dict(ckpt["meta"]["student_arch"])
        sd = ckpt["state_dict"]
    except (CheckpointError, FileNotFoundError, KeyError) as e:
        raise UsageError(f"{ckpt_path}: not a CoMAD distillation checkpoint (it needs "
                 f"'state_dict' and 'meta.student_arch'; {type(e).__name__}: {e})")
    img_size = arch.pop("img_size")
    student_sd = {k[len("student."):]: v for k, v in sd.items() if k.startswith("student.")}
    if not student_sd:
        raise UsageError(f"{ckpt_path} holds no 'student.*' weights")
    vit = build_vit(arch, img_size=img_size, what=f"{ckpt_path}: meta.student_arch")
    try:
        load_strict(vit, student_sd, str(ckpt_path))
    except CheckpointError as e:
        raise UsageError(f"{e} (the 'student.*' weights do not fit meta.student_arch {arch})")
    step = ckpt.get("meta", {}).get("iter", "x")
    out = Path(a.out) if a.out else ckpt_path.parent / f"student_iter{step}"
    meta = dict(checkpoint=str(ckpt_path), iterations=step)
    path = export_student(vit, out, meta, latest_pointer=f"work_dirs/{LATEST_POINTER}" if a.latest else None,
                          img_size=a.img_size)
    print(f"exported {path}")


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("export_student", main)
