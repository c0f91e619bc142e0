#!/usr/bin/env python
"""Run the evidence experiment (docs/evidence.md): real teachers distilled into a ViT on Fashion-MNIST.

    experiments/run_evidence.py [--preset cpu|pilot|gpu|tiny] [--set FIELD=VALUE ...] [--work-dir DIR] [--results-dir DIR]

The preset fixes the sizes (``experiments.evidence.config.PRESETS``); ``--set`` replaces a field for a
run of your own (``--set steps=50 --set seeds=0,1,2``); the evaluation's rules stay fixed. A
re-run reuses finished units and resumes an interrupted one. ``--curve 180,360,720,1440`` runs the
preset once per schedule and draws the learning curve (experiments.evidence.curve). Run experiments/evidence_setup.sh first
(experiments/evidence.sh does).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from experiments.evidence import PRESETS, preset, run_evidence  # noqa: E402
from experiments.evidence.curve import run_curve  # noqa: E402
from experiments.evidence.run import default_results_dir, parse_overrides  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="claims-cpu", choices=sorted(PRESETS))
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="replace a field of the preset")
    p.add_argument("--work-dir", type=Path, default=REPO / "work_dirs" / "evidence")
    p.add_argument("--results-dir", type=Path, default=None, help="default: results/evidence[/<preset>]")
    p.add_argument("--curve", default=None, metavar="STEPS,...", help="one run per schedule length; the learning curve")
    a = p.parse_args(argv)
    try:
        cfg = preset(a.preset, **parse_overrides(a.set))
        results = a.results_dir or default_results_dir(cfg.name, REPO)
        if a.curve:
            steps = [int(x) for x in a.curve.split(",")]
            out = run_curve(cfg, steps, a.work_dir, results)
        else:
            out = run_evidence(cfg, a.work_dir, results)
    except (FileNotFoundError, ValueError, RuntimeError) as e:
        print(f"evidence: error: {e}", file=sys.stderr)
        return 2
    print(out["summary"])
    return 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("evidence", main)
