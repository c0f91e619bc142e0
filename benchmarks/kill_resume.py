#!/usr/bin/env python
"""Kill -9 a distillation at a checkpoint, resume it, and compare its student with an uninterrupted one.

    python benchmarks/kill_resume.py --work-dir DIR --kill-at N --compare STUDENT [-- distill.sh options]

Runs ``tools/distill.sh`` (the demo config unless options name another) into ``DIR``, kills its whole
process group with SIGKILL as soon as ``iter_N.pth`` exists, runs it again with ``--resume``, and
prints the largest absolute difference between the resumed run's ``student.safetensors`` and
``STUDENT`` (the uninterrupted run's) as JSON. On the CPU the resume is bit-exact; on CUDA with
``torch.compile`` the difference is what compiled kernels allow, measured here (gpu_stages.py's
``pipeline`` stage records it).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work-dir", type=Path, required=True)
    p.add_argument("--kill-at", type=int, required=True, help="kill when iter_N.pth exists")
    p.add_argument("--compare", type=Path, required=True, help="the uninterrupted run's student.safetensors")
    p.add_argument("options", nargs="*", help="more tools/distill.sh options (after --)")
    a = p.parse_args(argv)
    cmd = ["bash", str(REPO / "tools" / "distill.sh"), "--work-dir", str(a.work_dir),
           "--cfg-options", "model.compile=auto", *a.options]
    env = dict(os.environ, TORCHRUN="1")  # through torchrun, as a cluster runs it
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    target = a.work_dir / f"iter_{a.kill_at}.pth"
    while proc.poll() is None and not target.exists():
        time.sleep(0.2)
    if proc.poll() is not None:
        raise SystemExit(f"kill_resume: the run ended (exit {proc.returncode}) before {target} existed")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = subprocess.run([*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True)
    if resumed.returncode != 0:
        raise SystemExit(f"kill_resume: --resume failed (exit {resumed.returncode}): {resumed.stderr[-1500:]}")
    from safetensors.torch import load_file

    got, ref = (load_file(str(f)) for f in (a.work_dir / "student" / "student.safetensors", a.compare))
    diff = max(float((got[k].float() - ref[k].float()).abs().max()) for k in ref)
    print(json.dumps(dict(killed_at=a.kill_at, max_abs_diff=diff, bit_equal=diff == 0.0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
