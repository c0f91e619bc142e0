#!/usr/bin/env python
"""Fifteen GPU minutes, in order of what users need (issue 21): the stages of one prepared script.

    python benchmarks/gpu_stages.py [STAGE ...] [--dry-run] [--results DIR] [--wheels DIR] [--site DIR]

Stages, in this order (none named: all that have no passed result yet, in order):

- ``build``: mmcv 2.1.0 with its CUDA ops against this machine's torch (``tools/build_mmcv.sh``
  with ``FORCE_CUDA=1``, ``TORCH_CUDA_ARCH_LIST`` of the card, all cores); the wheel is cut into
  parts under ``$OUT`` so that the next device call carries it (a call returns at most 8 files of 16 MiB).
- ``pipeline``: what users run, on CUDA: the demo distillation through ``tools/distill.sh``
  (torchrun, 1 GPU, ``compile='auto'``, bf16 AMP) uninterrupted and with a kill -9 then
  ``--resume`` (the largest difference of the two students is recorded), ``tools/run_transfer.sh
  --demo ade20k coco imagenet-ft imagenet-linear imagenet-linear-cached imagenet-knn`` (the ImageNet
  protocols' bf16 AmpOptimWrapper has run on no GPU yet), and ``tools/infer.py`` on the releases.
- ``evidence``: the claims design at GPU sizes (``experiments/run_evidence.py --preset claims-gpu``,
  the seeds of ``EVIDENCE_SEEDS``, default 0: a unit is durable, so the seeds can take several calls).
- ``step``: the throughput rows (``benchmarks/gpu_run.sh step``).
- ``data``: the DALI / end-to-end rows (``benchmarks/gpu_run.sh data``).

Each stage writes ``<results>/<stage>.json`` (atomically) as soon as it ends: the card, torch's
version, the commands, their exit codes and times, and its ``status``; a stage whose file says
``passed`` is skipped (commit the file and the next call goes on with the next stage). Carried
wheels (``--wheels``, default ``.whl``) are installed into ``--site`` first (pip ``--target``, or
unzipped). ``--dry-run`` (the test suite's, on the CPU) runs the same selection, skipping, wheel
installation, device checks and recording, and checks each command instead of running it: its
files exist and each Python entry point imports and parses its options (``--help``).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
STAGES = ("build", "pipeline", "evidence", "step", "data")


@dataclass
class Context:
    """What the stages share: where results go, the environment of their commands, dry run or not."""

    results: Path
    out: Path
    env: dict[str, str]
    dry_run: bool = False
    device: dict[str, str] = field(default_factory=dict)


def device_info(dry_run: bool) -> dict[str, str]:
    """The card (or the CPU in a dry run), torch's version and CUDA's: checked before any stage."""
    import torch

    info = dict(torch=torch.__version__, python=sys.version.split()[0], cuda=str(torch.version.cuda))
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(card=p.name, memory_gib=f"{p.total_memory / 2**30:.0f}", capability=f"{p.major}.{p.minor}")
    elif dry_run:
        info.update(card="cpu (dry run)")
    else:
        raise SystemExit("gpu_stages: no CUDA device (use --dry-run to check the script on the CPU)")
    return info


def install_wheels(wheels: Path, site: Path) -> list[str]:
    """Install the carried wheels into ``site`` (pip ``--no-index --no-deps --target``; unzip when pip fails)."""
    found = sorted(wheels.glob("*.whl")) if wheels.is_dir() else []
    if not found:
        return []
    site.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target", str(site), *map(str, found)]
    if subprocess.run(cmd, capture_output=True, text=True).returncode != 0:
        import zipfile

        for w in found:
            with zipfile.ZipFile(w) as z:
                z.extractall(site)
    return [w.name for w in found]


def _tools(commands: list[list[str]]) -> list[Path]:
    """The repository files the commands name (scripts and tools)."""
    return [REPO / a for c in commands for a in c if a.endswith((".py", ".sh")) and not a.startswith("-")]


def run_commands(ctx: Context, commands: list[list[str]], timeout: float = 540) -> list[dict]:
    """Run (or, in a dry run, check) each command; stops at the first failure."""
    done: list[dict] = []
    for cmd in commands:
        t0 = time.monotonic()
        if ctx.dry_run:
            missing = [str(p) for p in _tools([cmd]) if not p.is_file()]
            rc, tail = (3, f"missing {missing}") if missing else _check(ctx, cmd)
        else:
            p = subprocess.run(cmd, cwd=REPO, env=ctx.env, capture_output=True, text=True, timeout=timeout)
            rc, tail = p.returncode, (p.stdout + p.stderr)[-2000:]
        done.append(dict(command=shlex.join(cmd), rc=rc, seconds=round(time.monotonic() - t0, 1), tail=tail))
        if rc != 0:
            break
    return done


_CHECKED: dict[str, tuple[int, str]] = {}


def _check(ctx: Context, cmd: list[str]) -> tuple[int, str]:
    """A dry run's check of one command: a Python tool must import and parse ``--help`` (once per tool)."""
    py = [a for a in cmd if a.endswith(".py")]
    if not py:
        return 0, "checked: files exist"
    if py[0] not in _CHECKED:
        p = subprocess.run([sys.executable, str(REPO / py[0]), "--help"], cwd=REPO, env=ctx.env, capture_output=True,
                           text=True, timeout=120)
        _CHECKED[py[0]] = (p.returncode, (p.stdout + p.stderr)[-300:])
    return _CHECKED[py[0]]


# ------------------------------------------------------------------------------------ the stages
def stage_build(ctx: Context) -> list[list[str]]:
    arch = ctx.device.get("capability", "9.0")
    return [["bash", "-c", f"FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST={arch} MAX_JOBS=$(nproc) COMAD_WHEEL_CACHE={ctx.out}/cache "
             f"bash tools/build_mmcv.sh {sys.executable} > {ctx.out}/mmcv_wheel.txt && "
             f"split -b 15M -d $(cat {ctx.out}/mmcv_wheel.txt) {ctx.out}/mmcv-part-", "tools/build_mmcv.sh"]]


def stage_pipeline(ctx: Context) -> list[list[str]]:
    w = ctx.out / "pipeline"
    demo = ["--cfg-options", "model.compile=auto"]
    student = w / "plain" / "student" / "student.safetensors"
    return [
        ["bash", "-c", f"TORCHRUN=1 bash tools/distill.sh --work-dir {w / 'plain'} {shlex.join(demo)}",
         "tools/distill.sh"],
        [sys.executable, "benchmarks/kill_resume.py", "--work-dir", str(w / "killed"), "--kill-at", "40",
         "--compare", str(student)],
        ["bash", "tools/run_transfer.sh", "--demo", "--student", str(student), "--work-dir", str(w / "transfer"),
         "ade20k", "coco", "imagenet-ft", "imagenet-linear", "imagenet-linear-cached", "imagenet-knn"],
        [sys.executable, "tools/infer.py", "--work-dir", str(w / "transfer" / "ade20k"), "--device", "cuda"],
        [sys.executable, "tools/infer.py", "--work-dir", str(w / "transfer" / "coco"), "--device", "cuda"],
    ]


def stage_evidence(ctx: Context) -> list[list[str]]:
    seeds = os.environ.get("EVIDENCE_SEEDS", "0")
    return [[sys.executable, "experiments/run_evidence.py", "--preset", "claims-gpu", "--set", f"seeds={seeds}",
             "--work-dir", str(ctx.out / "evidence"), "--results-dir", "results/evidence/claims-gpu"]]


def stage_step(ctx: Context) -> list[list[str]]:
    return [["bash", "benchmarks/gpu_run.sh", "step"]]


def stage_data(ctx: Context) -> list[list[str]]:
    return [["bash", "benchmarks/gpu_run.sh", "data"]]


STAGE_COMMANDS: dict[str, Callable[[Context], list[list[str]]]] = {
    "build": stage_build, "pipeline": stage_pipeline, "evidence": stage_evidence, "step": stage_step,
    "data": stage_data}


def result_path(ctx: Context, stage: str) -> Path:
    return ctx.results / f"{stage}.json"


def passed(ctx: Context, stage: str) -> bool:
    try:
        return json.loads(result_path(ctx, stage).read_text()).get("status") == "passed"
    except (OSError, ValueError):
        return False


def run_stage(ctx: Context, stage: str) -> dict:
    """Run one stage and record it (atomically) with the card named."""
    sys.path.insert(0, str(REPO))
    from comad.io import atomic_write_json

    steps = run_commands(ctx, STAGE_COMMANDS[stage](ctx))
    ok = all(s["rc"] == 0 for s in steps)
    status = ("dry-run" if ctx.dry_run else "passed") if ok else "failed"
    record = dict(stage=stage, status=status, device=ctx.device, commands=steps, date=time.strftime("%Y-%m-%d %H:%M"))
    atomic_write_json(record, result_path(ctx, stage))
    return record


def select(ctx: Context, wanted: list[str]) -> list[str]:
    """The stages to run: those named (in the script's order), else every one not passed yet."""
    bad = sorted(set(wanted) - set(STAGES))
    if bad:
        raise SystemExit(f"gpu_stages: unknown stage(s) {bad}; choose from {list(STAGES)}")
    chosen = [s for s in STAGES if s in wanted] if wanted else list(STAGES)
    return [s for s in chosen if not passed(ctx, s)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("stages", nargs="*", help=f"of {list(STAGES)} (default: every one not passed yet)")
    p.add_argument("--dry-run", action="store_true", help="check the script on the CPU (the test suite's)")
    p.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results" / "gpu")
    p.add_argument("--wheels", type=Path, default=REPO / ".whl")
    p.add_argument("--site", type=Path, default=Path("/tmp/site"))
    a = p.parse_args(argv)
    out = Path(os.environ.get("OUT", REPO / "benchmarks" / "out" / "gpu"))
    installed = install_wheels(a.wheels, a.site)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(a.site), str(REPO), os.environ.get("PYTHONPATH", "")]))
    ctx = Context(results=a.results, out=out, env=env, dry_run=a.dry_run, device=device_info(a.dry_run))
    print(f"device: {ctx.device}; installed {len(installed)} carried wheel(s) into {a.site}")
    for stage in select(ctx, a.stages):
        rec = run_stage(ctx, stage)
        print(f"{stage}: {rec['status']} ({sum(c['seconds'] for c in rec['commands']):.0f} s) -> {result_path(ctx, stage)}")
        if rec["status"] == "failed":
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
