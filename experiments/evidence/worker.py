"""One worker process of the evidence run (started by :func:`experiments.evidence.run.run_evidence`).

``python -m experiments.evidence.worker --run-dir DIR --work-dir DIR --index I`` reads the run's
``config.json``, sets its torch threads, and runs every unit it can claim
(:func:`~experiments.evidence.run.work_units`), writing its progress to ``DIR/progress/workerI.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--work-dir", required=True)
    p.add_argument("--index", type=int, required=True)
    args = p.parse_args(argv)
    import torch

    from .run import config_from_json, work_units
    from .teachers import prepare_teachers

    run_dir = Path(args.run_dir)
    cfg = config_from_json(run_dir / "config.json")
    torch.set_num_threads(cfg.threads)
    files = prepare_teachers(cfg, args.work_dir)  # made by the parent; this only finds them
    ran = work_units(cfg, run_dir, files, progress_file=run_dir / "progress" / f"worker{args.index}.json")
    print(f"worker {args.index}: ran {ran or 'nothing (all done or held by the other workers)'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
