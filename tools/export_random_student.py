#!/usr/bin/env python
"""Export the random-initialisation baseline student (comad.export format).

    tools/export_random_student.py [CONFIG] [--out DIR] [--seed N]

CONFIG defaults to benchmark_configs/baselines/random-init_vit-tiny.py; DIR to
work_dirs/random-init_vit-tiny[-seedN]/student. Evaluate the result like any student.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from transfer.imagenet.baselines import BASELINE_DIR, export_random_student  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config", nargs="?", type=Path, default=BASELINE_DIR / "random-init_vit-tiny.py")
    p.add_argument("--out", type=Path, default=None, help="output folder (default work_dirs/<config name>[-seedN]/student)")
    p.add_argument("--seed", type=int, default=None, help="init seed (default: baseline.seed of the config)")
    a = p.parse_args(argv)
    out = a.out or REPO / "work_dirs" / (a.config.stem + (f"-seed{a.seed}" if a.seed is not None else "")) / "student"
    path = export_random_student(a.config, out, a.seed)
    print(f"random-init student written: {path}")
    return 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("export_random_student", main)
