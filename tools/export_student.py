"""Export the student of a distillation checkpoint for transfer (timm safetensors + mm checkpoint).

    python tools/export_student.py WORK_DIR_OR_CHECKPOINT [--out DIR] [--img-size 224] [--latest]

Every distillation run already does this at its end (comad.engine.ComadRunHook); use this tool
for an intermediate checkpoint or a run that was stopped. The student's architecture is read
from the config saved in the checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from comad.export import LATEST_POINTER, export_student  # noqa: E402
from comad.io import CheckpointError  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="a work dir (its newest iter_*.pth) or a checkpoint file")
    p.add_argument("--out", help="output folder (default: <checkpoint dir>/student_<iter>)")
    p.add_argument("--img-size", type=int, default=224, help="resolution of the exported pos_embed (default 224)")
    p.add_argument("--latest", action="store_true", help=f"also point work_dirs/{LATEST_POINTER} at it")
    a = p.parse_args()

    from mmengine.config import Config

    from comad.engine.launch import latest_checkpoint
    from comad.mm_compat import load_local_checkpoint
    from comad.models.student import build_vit

    src = Path(a.src)
    ckpt_path = latest_checkpoint(src) if src.is_dir() else src
    if ckpt_path is None:
        sys.exit(f"export_student: error: no checkpoint (iter_*.pth) in {src}")
    try:
        ckpt = load_local_checkpoint(str(ckpt_path))
        cfg_text = ckpt["meta"]["cfg"]
        sd = ckpt["state_dict"]
    except (CheckpointError, FileNotFoundError, KeyError) as e:
        sys.exit(f"export_student: error: {ckpt_path}: not a CoMAD distillation checkpoint ({e})")
    cfg = Config.fromstring(cfg_text, ".py")
    student_sd = {k[len("student."):]: v for k, v in sd.items() if k.startswith("student.")}
    if not student_sd:
        sys.exit(f"export_student: error: {ckpt_path} holds no 'student.*' weights")
    vit = build_vit(cfg.model.student.get("arch", "vit_tiny_patch16_224"), img_size=cfg.model.get("img_size", 224))
    result = vit.load_state_dict(student_sd, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("head.", "fc_norm."))]
    if missing or result.unexpected_keys:
        sys.exit(f"export_student: error: {ckpt_path}: student keys do not match the config's architecture "
                 f"(missing {missing[:8]}, unexpected {result.unexpected_keys[:8]})")
    step = ckpt.get("meta", {}).get("iter", "x")
    out = Path(a.out) if a.out else ckpt_path.parent / f"student_iter{step}"
    meta = dict(checkpoint=str(ckpt_path), iterations=step, config=cfg.filename or "<from checkpoint>")
    path = export_student(vit, out, meta, latest_pointer=f"work_dirs/{LATEST_POINTER}" if a.latest else None,
                          img_size=a.img_size)
    print(f"exported {path}")


if __name__ == "__main__":
    main()
