#!/usr/bin/env python
"""Draw the consensus gating of a distillation checkpoint over images: each teacher's weight per patch.

    tools/gating_maps.py CONFIG CHECKPOINT_OR_WORK_DIR [IMAGE ...] [--photos chelsea,coffee] --out PNG

CONFIG is the distillation config the run used; the checkpoint (or the newest iter_*.pth of a work
dir) gives the student, decoder and fitted alignment. Images: files, and/or photos that ship in
scikit-image / scikit-learn by name (comad.data.demo.DEMO_PHOTOS). Every teacher sees every patch,
the student its training share (docs/method.md, "Gating maps"). Library code: comad/gating_maps.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("checkpoint", help="an iter_*.pth, or a work dir (its newest one)")
    p.add_argument("images", nargs="*", help="image files")
    p.add_argument("--photos", default="", help="packaged photos by name, comma-separated (e.g. chelsea,coffee)")
    p.add_argument("--out", required=True, help="the PNG (a JSON of the mean weights goes beside it)")
    p.add_argument("--seed", type=int, default=0, help="seed of the student's mask")
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)

    import numpy as np
    from PIL import Image

    from comad.data.demo import load_demo_photo
    from comad.engine.launch import latest_checkpoint
    from comad.io import CheckpointError
    from comad.gating_maps import draw_gating_maps, gating_maps, load_distiller, prepare_images, summary_line

    ckpt = latest_checkpoint(a.checkpoint) if Path(a.checkpoint).is_dir() else Path(a.checkpoint)
    if ckpt is None or not ckpt.is_file():
        p.error(f"checkpoint {a.checkpoint}: no such file (or no iter_*.pth in that work dir)")
    photos = [n for n in a.photos.split(",") if n]
    if not a.images and not photos:
        p.error("give image files and/or --photos NAMES")
    try:
        arrays = [np.asarray(Image.open(f).convert("RGB")) for f in a.images] + [load_demo_photo(n) for n in photos]
        model = load_distiller(a.config, ckpt, a.device)
        maps = gating_maps(model, prepare_images(arrays, int(model.img_size)), seed=a.seed)
        out = draw_gating_maps(maps, a.out, names=[Path(f).name for f in a.images] + photos)
    except (OSError, KeyError, ValueError, CheckpointError) as e:  # a bad file, photo name or checkpoint
        print(f"gating_maps: error: {e}", file=sys.stderr)
        return 1
    print(f"[gating] {ckpt} on {len(arrays)} image(s) -> {out} (mean weights: {summary_line(maps)})", flush=True)
    return 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("gating_maps", main)
