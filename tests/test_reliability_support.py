"""Shared helpers of the reliability suite (tests/test_reliability_*.py); no tests here.

A tiny distillation (ViT 32 wide / 2 deep student, three 64-wide teachers written in the
official MAE / iBOT / MoCo v3 layouts, the packaged demo photos at 64 px) that runs through the
real entry point ``tools/distill.sh`` in a few seconds, plus test-only hooks (kill the process at
an iteration, poison a batch with NaN) loaded from a module written next to the config.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = ROOT / "benchmark_configs" / "distill" / "comad_vit-tiny-demo_1xb16-120it_photos-64.py"
TEACHERS = [("mae", "mae", "mae_pretrain_vit_base.pth"), ("ibot", "ibot", "checkpoint.pth"),
            ("mocov3", "mocov3", "vit-b-300ep.pth.tar")]
TEACHER_ARCH = dict(embed_dim=64, depth=2, num_heads=1, patch_size=16, img_size=64)

HOOKS_MODULE = '''
"""Test-only hooks of the reliability suite (never part of a real run)."""
import os
import signal

import torch
from mmengine.dist import get_rank
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class KillAtIter(Hook):
    """SIGKILL this process after iteration $RELIABILITY_KILL_AT (1-based, as logged), after the
    checkpoint hook of that iteration ran."""

    priority = "LOWEST"

    def __init__(self):
        self.at = int(os.environ.get("RELIABILITY_KILL_AT", "0"))

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        if self.at and runner.iter + 1 == self.at:
            os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module(force=True)
class PoisonAtIter(Hook):
    """Fill image 0 of the batches of the given iterations (1-based) with NaN on the given ranks."""

    priority = "HIGHEST"

    def __init__(self, iterations=(), ranks=None):
        self.iterations = set(iterations)
        self.ranks = ranks

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter + 1 in self.iterations and (self.ranks is None or get_rank() in self.ranks):
            x = data_batch["inputs"]
            if x.dtype == torch.uint8:  # uint8 crops: normalise them here (as the model would) to hold a NaN
                from comad.engine.preprocess import ComadDataPreprocessor

                x = data_batch["inputs"] = ComadDataPreprocessor()(dict(inputs=x))["inputs"]
            x[0].fill_(float("nan"))
'''


def prepare_assets(folder: Path) -> Path:
    """Write (once) the tiny teachers and the demo photos under ``folder``; return it."""
    from comad.data.demo import make_demo_imagefolder
    from comad.engine.launch import prepare_demo_teachers

    folder.mkdir(parents=True, exist_ok=True)
    prepare_demo_teachers(dict(teacher_dir=str(folder / "teachers"), teachers=TEACHERS, teacher_arch=TEACHER_ARCH))
    make_demo_imagefolder(folder / "photos", img_size=96, n_per_image=6)
    return folder


def tiny_config(path: Path, assets: Path, extra: str = "") -> Path:
    """Write a config inheriting the demo (absolute ``_base_``) with a tiny student; return it.

    ``extra``: more overrides (merged into the tiny config's dicts; lists are replaced). 12 iterations of batch 4, checkpoints every 4. The
    test-only hooks module is written beside it.
    """
    teachers = ",\n        ".join(
        f"dict(name={n!r}, checkpoint={str(assets / 'teachers' / f)!r}, format={fmt!r}, arch=None)"
        for n, fmt, f in TEACHERS)
    text = f'''_base_ = [{str(DEMO_CONFIG)!r}]
custom_imports = dict(imports=['comad.engine', 'reliability_hooks'], allow_failed_imports=False)
demo = dict(teacher_dir={str(assets / 'teachers')!r}, teacher_arch={TEACHER_ARCH!r})
model = dict(
    teachers=[
        {teachers},
    ],
    student=dict(arch=dict(_delete_=True, embed_dim=32, depth=2, num_heads=2), drop_path_rate=0.0),
    decoder=dict(depth=1, num_heads=2),
)
train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False,
                        dataset=dict(dataset=dict(root={str(assets / 'photos')!r})))
schedule = dict(max_iters=12, warmup_iters=2)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4, max_keep_ckpts=10))
custom_hooks = [dict(type='ComadRunHook', export=True, latest_pointer=None), dict(type='KillAtIter')]
randomness = dict(seed=0, deterministic=True)
log_processor = dict(window_size=1)
'''
    if extra:  # a child config, so that its dicts merge into the tiny one's (mmengine inheritance)
        base = path.with_name(f"{path.stem}_tiny_base.py")
        base.write_text(text)
        path.write_text(f"_base_ = [{str(base)!r}]\n" + extra)
    else:
        path.write_text(text)
    (path.parent / "reliability_hooks.py").write_text(HOOKS_MODULE)
    return path


def free_port() -> int:
    """A TCP port nobody listens on now (for torchrun's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def distill(config: Path, work_dir: Path, *args: str, gpus: int = 1, env: dict[str, str] | None = None,
            timeout: int = 300) -> subprocess.CompletedProcess:
    """``tools/distill.sh CONFIG [GPUS] --work-dir DIR ARGS`` on the CPU, run from ``work_dir``'s parent."""
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(config.parent)]), CUDA_VISIBLE_DEVICES="",
             PYTHON=sys.executable, PORT=str(free_port()), OMP_NUM_THREADS="1")
    e.update(env or {})
    cmd = ["bash", str(ROOT / "tools" / "distill.sh"), str(config)] + ([str(gpus)] if gpus > 1 else [])
    cmd += ["--work-dir", str(work_dir), *args]
    return subprocess.run(cmd, cwd=work_dir.parent, env=e, capture_output=True, text=True, timeout=timeout)


def student_tensors(work_dir: Path) -> dict[str, torch.Tensor]:
    """The exported student (``student/student.safetensors``) of a run."""
    from safetensors.torch import load_file

    return load_file(str(work_dir / "student" / "student.safetensors"))


def logged_scalars(work_dir: Path) -> dict[int, dict[str, Any]]:
    """iteration -> the scalars mmengine logged for it, over every run (timestamp) in ``work_dir``."""
    out: dict[int, dict[str, Any]] = {}
    for f in sorted(work_dir.glob("*/vis_data/scalars.json")):
        for line in f.read_text().splitlines():
            row = json.loads(line)
            if "iter" in row:
                out[int(row["iter"])] = row
    return out


def full_log(r: subprocess.CompletedProcess, work_dir: Path) -> str:
    """What a run said: its console, then its mmengine log files (the console is quiet by default, comad.console)."""
    return r.stdout + r.stderr + "".join(p.read_text() for p in sorted(work_dir.glob("*/*.log")))


def tail(r: subprocess.CompletedProcess, n: int = 4000) -> str:
    """The end of a finished process's output, for assertion messages."""
    return (r.stdout + r.stderr)[-n:]


def run_inprocess(config: Path, work_dir: Path, resume: bool = False, options: dict[str, Any] | None = None) -> Any:
    """Build the Runner as tools/train.py does, in this process, and train; return the runner.

    ``config.parent`` must be on ``sys.path`` (the test-only hooks module lives there).
    """
    from mmengine.config import Config

    from comad.engine.launch import build_runner

    cfg = Config.fromfile(str(config))
    if options:
        cfg.merge_from_dict(options)
    runner = build_runner(cfg, work_dir=str(work_dir), resume=resume)
    runner.train()
    return runner
