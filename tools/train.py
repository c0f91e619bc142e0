"""mmengine entry point of the distillation: ``tools/distill.sh`` calls it (once per process).

python tools/train.py CONFIG [--work-dir DIR] [--resume] [--launcher none|pytorch|slurm]
                             [--verbose] [--cfg-options k=v ...]

The console shows a progress bar, the warnings that matter and a summary; the full mmengine log
goes to <work dir>/<timestamp>/<timestamp>.log (--verbose or COMAD_VERBOSE=1: on the console too).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mmengine.config import Config, DictAction  # noqa: E402

from comad.console import VERBOSE_ENV, set_verbose  # noqa: E402
from comad.engine.launch import build_runner  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("config")
    p.add_argument("--work-dir", help="default: work_dirs/<config name>")
    p.add_argument("--resume", action="store_true", help="resume from the newest checkpoint in the work dir")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none")
    p.add_argument("--verbose", action="store_true", help=f"the full mmengine stream on the console ({VERBOSE_ENV}=1)")
    p.add_argument("--cfg-options", nargs="+", action=DictAction, help="override config keys, k=v")
    p.add_argument("--local-rank", "--local_rank", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args()
    os.environ.setdefault("LOCAL_RANK", str(a.local_rank))
    if a.verbose:
        set_verbose(True)
    cfg = Config.fromfile(a.config)
    if a.cfg_options:
        cfg.merge_from_dict(a.cfg_options)
    runner = build_runner(cfg, work_dir=a.work_dir, resume=a.resume, launcher=a.launcher)
    runner.train()


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("distill", main)
