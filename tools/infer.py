#!/usr/bin/env python
"""Draw a segmentor's / detector's predictions on an image into a PNG (mmseg's / mmdet's visualizers).

    tools/infer.py CONFIG CHECKPOINT IMAGE --out PNG [--device cpu] [--score-thr 0.3]
    tools/infer.py --work-dir TASK_WORK_DIR [--out PNG] ...   # a task's release and its first test image

CONFIG / CHECKPOINT: e.g. a task's release files (<task work dir>/release/); the library code is
transfer/infer.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from transfer.infer import draw_prediction, task_release  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="*", metavar="CONFIG CHECKPOINT IMAGE")
    p.add_argument("--work-dir", help="a dense task's work dir: its release and the first image it was tested on")
    p.add_argument("--out", help="the PNG (default with --work-dir: <work dir>/prediction.png)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--score-thr", type=float, default=0.3, help="detections drawn from this score on")
    a = p.parse_args(argv)
    if a.work_dir:
        if a.files:
            p.error("give either --work-dir or CONFIG CHECKPOINT IMAGE")
        config, ckpt, image = task_release(a.work_dir)
        out = a.out or Path(a.work_dir) / "prediction.png"
    elif len(a.files) == 3 and a.out:
        (config, ckpt, image), out = a.files, a.out
    else:
        p.error("expected CONFIG CHECKPOINT IMAGE --out PNG, or --work-dir DIR")
    drawn = draw_prediction(config, ckpt, image, out, device=a.device, score_thr=a.score_thr)
    print(f"[infer] {image} -> {drawn.out_file} ({drawn.summary})", flush=True)
    return 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("infer", main)
