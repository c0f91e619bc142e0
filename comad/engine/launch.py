"""Build the mmengine Runner of a distillation config for this process.

Resolves what a config cannot know in advance: the world size (so iterations and lr follow
the effective batch), the device (bf16 AMP and the NCCL backend only with CUDA, said in the
log), the newest checkpoint to resume from, the data backend (``data.backend``: mmengine's
DataLoader or DALI, :mod:`comad.engine.dataloader`) and, for the demo, the teacher files.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..console import notice, quiet_logger
from ..cpu_bf16 import warn_if_slow_bf16
from ..io import CheckpointError
from ..runtime import world_size
from .dataloader import DALI_KEY, build_dataloader, data_backend
from .progress import add_progress_hook
from .schedule import apply_schedule, resolve_schedule

__all__ = ["ComadRunner", "archive_previous_run", "build_runner", "check_work_dir", "latest_checkpoint",
           "prepare_demo_teachers", "warn_cpu_bf16"]


class ComadRunner(Runner):
    """mmengine's Runner, loading checkpoints (resume or ``load_from``) strictly and as data only.

    - mmengine loads them with ``strict=False``: a checkpoint of another model (another width
      or depth) or one with missing keys only logs a warning and training goes on from partly
      random weights. Here any missing, unexpected or mis-shaped key is an error that names the
      file.
    - mmengine's ``resume`` parses the config text stored in the checkpoint's ``meta`` with
      ``Config.fromstring``, which executes it as Python: a data-only (``weights_only``-safe)
      file could still run code. That text is dropped unread (it served a GPU-count check only;
      this project rescales the schedule from the world size itself).

    Its logger's console is quiet unless ``--verbose`` / ``COMAD_VERBOSE=1`` (:mod:`comad.console`):
    the full stream goes to the log file in the work dir. Building it warns once when the config
    asks for bf16 on a CPU without bf16 units (:func:`warn_cpu_bf16`).
    """

    @classmethod
    def from_cfg(cls, cfg: Config) -> "ComadRunner":  # noqa: D102
        warn_cpu_bf16(cfg)
        return super().from_cfg(cfg)

    def build_logger(self, log_level: int | str = "INFO", log_file: str | None = None, **kwargs: Any) -> Any:
        """mmengine's logger (every record still goes to the log file), its console quiet (:func:`comad.console.quiet_logger`)."""
        logger = super().build_logger(log_level=log_level, log_file=log_file, **kwargs)
        quiet_logger(logger)
        return logger

    def load_checkpoint(self, filename: str, map_location: Any = "cpu", strict: bool = False,
                        revise_keys: list = [(r"^module.", "")]) -> dict:  # noqa: B006 - mmengine's signature
        try:
            ckpt = super().load_checkpoint(filename, map_location=map_location, strict=True, revise_keys=revise_keys)
        except RuntimeError as e:
            if "loaded state dict do not match" not in str(e):  # mmengine's load_state_dict(strict=True)
                raise
            raise CheckpointError(f"checkpoint {filename} does not fit this model: {str(e).strip()}") from None
        meta = ckpt.get("meta") if isinstance(ckpt, dict) else None
        if isinstance(meta, dict):
            meta.pop("config", None)
        return ckpt

    @staticmethod
    def build_dataloader(dataloader: Any, seed: int | None = None, diff_rank_seed: bool = False) -> Any:
        """mmengine's DataLoader, or the DALI loader when ``build_runner`` marked the entry
        (``data.backend='dali'``; :mod:`comad.engine.dataloader`)."""
        return build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)

    def train(self) -> Any:
        """Train; a fresh run first moves an earlier run's outputs aside (see :func:`archive_previous_run`)."""
        if not self._resume and self.rank == 0:
            moved = archive_previous_run(self.work_dir)
            if moved is not None:
                notice(f"the work dir held an earlier run's checkpoints; they were moved to {moved} "
                       "(use --resume to continue a run)", logging.WARNING, self.logger)
        return super().train()


#: What a run writes at the top of its work dir (the per-run log folders are unique already).
RUN_OUTPUTS = ("iter_*.pth", "last_checkpoint", "run_info.json", "student")


def archive_previous_run(work_dir: str | Path, outputs: tuple[str, ...] = RUN_OUTPUTS,
                         marker: str = "iter_") -> Path | None:
    """Move an earlier run's checkpoints and export into ``<work_dir>/superseded_<time>/``.

    A fresh run (no ``--resume``) in a used work dir would otherwise overwrite the earlier
    run's ``iter_N.pth`` one by one and leave the others mixed with its own, so that a later
    ``--resume`` could continue the wrong run. Nothing is deleted. ``outputs``: the glob
    patterns of what a run leaves (the distillation's by default; the transfer tasks name
    theirs); nothing moves unless one of them starts with ``marker`` (a checkpoint). Returns the
    folder, or None when there was nothing to move.
    """
    import time

    work_dir = Path(work_dir)
    found = [p for pattern in outputs for p in sorted(work_dir.glob(pattern))]
    if not any(p.name.startswith(marker) for p in found):
        return None
    dest = work_dir / f"superseded_{time.strftime('%Y%m%d_%H%M%S')}"
    n = 0
    while dest.exists():
        n += 1
        dest = work_dir / f"superseded_{time.strftime('%Y%m%d_%H%M%S')}_{n}"
    dest.mkdir()
    for p in found:
        os.replace(p, dest / p.name)
    return dest


def latest_checkpoint(work_dir: str | Path) -> Path | None:
    """The ``iter_N.pth`` with the largest N in ``work_dir`` (written atomically, so complete)."""
    found = []
    for p in Path(work_dir).glob("iter_*.pth"):
        m = re.fullmatch(r"iter_(\d+)\.pth", p.name)
        if m:
            found.append((int(m.group(1)), p))
    return max(found)[1] if found else None


def prepare_demo_teachers(demo: dict[str, Any]) -> None:
    """Write the demo's small random teachers in their official layouts (once).

    ``demo['teachers']``: ``(name, layout, file)`` entries, each a random ViT (seed 100 + i), or
    ``(name, layout, file, dict(linear_image_of=<earlier name>, noise=0.05))``: that teacher's
    encoder with its channels permuted and rescaled (its tokens an invertible linear image of
    the other's) plus ``noise`` (relative) weight noise, see
    :func:`comad.teachers.synthetic.linear_image_encoder`. The folder keeps the spec it was
    written for (``demo_teachers.json``); another spec rewrites the files.
    """
    import json

    from ..io import atomic_write_json
    from ..teachers.synthetic import linear_image_encoder, write_checkpoint

    folder = Path(demo["teacher_dir"])
    folder.mkdir(parents=True, exist_ok=True)
    spec = json.loads(json.dumps(dict(teachers=list(demo["teachers"]), teacher_arch=demo["teacher_arch"]), default=str))
    spec_file = folder / "demo_teachers.json"
    if (spec_file.is_file() and json.loads(spec_file.read_text()) == spec
            and all((folder / t[2]).exists() for t in demo["teachers"])):
        return
    encoders: dict[str, Any] = {}
    for i, (name, fmt, filename, *rel) in enumerate(demo["teachers"]):
        dst = folder / filename
        encoder = None
        if rel:
            base = dict(rel[0]).get("linear_image_of")
            if base not in encoders:
                raise ValueError(f"demo.teachers[{i}] ({name}): linear_image_of={base!r} must name an earlier teacher "
                                 f"of {[t[0] for t in demo['teachers'][:i]]}")
            encoder = linear_image_encoder(encoders[base], torch.Generator().manual_seed(100 + i),
                                           noise=float(dict(rel[0]).get("noise", 0.0)))[0]
        tmp = folder / f".{filename}.{os.getpid()}.tmp"
        encoders[name] = write_checkpoint(fmt, tmp, seed=100 + i, encoder=encoder, **demo["teacher_arch"])
        os.replace(tmp, dst)
    atomic_write_json(spec, spec_file)


def warn_cpu_bf16(cfg: Config) -> list[str]:
    """Warn once per setting (:func:`comad.cpu_bf16.warn_if_slow_bf16`) when the run would compute in bf16 on
    a CPU without bf16 units: a bf16 ``AmpOptimWrapper`` (autocast in training) or a val / test loop with
    ``fp16=True`` (mmengine autocasts to bf16 on a CPU). Returns the settings it warned about."""
    if torch.cuda.is_available():
        return []
    found = []
    ow = cfg.get("optim_wrapper") or {}
    if "Amp" in str(ow.get("type", "")) and str(ow.get("dtype")).replace("torch.", "") in ("bfloat16", "bf16"):
        found.append((f"optim_wrapper.type='{ow.get('type')}' with dtype='bfloat16' (bf16 autocast in training)",
                      "optim_wrapper.type='OptimWrapper' (fp32)"))
    for key in ("val_cfg", "test_cfg"):
        if (cfg.get(key) or {}).get("fp16"):
            found.append((f"{key}.fp16=True (mmengine autocasts to bf16 on a CPU)", f"{key}.fp16=False (fp32)"))
    return [setting for setting, faster in found if warn_if_slow_bf16(setting, faster)]


def check_work_dir(work_dir: str | Path) -> None:
    """Create the work dir and check that it takes files, or say clearly why not (names it)."""
    import tempfile

    work_dir = Path(work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=work_dir):
            pass
    except OSError as e:
        blocker = next((p for p in (work_dir, *work_dir.parents) if p.exists() and not p.is_dir()), None)
        why = f"{blocker} is a file, not a folder" if blocker is not None else (e.strerror or str(e))
        raise type(e)(e.errno, f"work dir {work_dir} (--work-dir or the config's work_dir) cannot be used: {why}") from None


def _precision(cfg: Config, cuda: bool) -> bool:
    """The config's ``amp`` key (auto / on / off) -> whether this run uses bf16 AMP, and the optimizer
    wrapper that goes with it: comad.engine's (mmengine's, plus the skipped / non-finite steps) or its AMP twin."""
    amp = cfg.get("amp", "auto")
    if amp not in ("auto", "on", "off"):
        raise ValueError(f"config key amp must be 'auto', 'on' or 'off', got {amp!r}")
    if amp == "on" and not cuda:
        raise ValueError("amp='on' needs a CUDA device; none is available (use amp='auto' or 'off')")
    use_amp = cuda and amp != "off"
    kind = cfg.optim_wrapper.get("type", "ComadOptimWrapper")
    if kind not in ("ComadOptimWrapper", "OptimWrapper"):
        raise ValueError(f"optim_wrapper.type {kind!r}: expected 'ComadOptimWrapper' (the config's amp key chooses AMP)")
    cfg.optim_wrapper.type = "ComadAmpOptimWrapper" if use_amp else "ComadOptimWrapper"
    if use_amp:
        cfg.optim_wrapper.dtype = "bfloat16"
    return use_amp


def build_runner(cfg: Config, work_dir: str | None = None, resume: bool = False, launcher: str = "none") -> Runner:
    """Finish ``cfg`` for this process and build the Runner (see the module docstring)."""
    cfg.launcher = launcher
    cfg.work_dir = work_dir or cfg.get("work_dir") or str(Path("work_dirs") / Path(cfg.filename).stem)
    check_work_dir(cfg.work_dir)
    demo = cfg.get("demo")
    if demo:
        print_log("=" * 64 + "\nDEMO RUN: small random teachers in the official MAE / iBOT / MoCo v3 layouts, real photos "
                  "from scikit-image / scikit-learn, 64 px. It shows the pipeline working, not a result.\n" + "=" * 64,
                  logger="current")
        prepare_demo_teachers(demo)

    cuda = torch.cuda.is_available()
    use_amp = _precision(cfg, cuda)
    accum = int(cfg.get("accumulation", 1))
    cfg.optim_wrapper.accumulative_counts = accum
    if not cuda and launcher != "none":
        cfg.env_cfg.dist_cfg = dict(backend="gloo")
        # mmengine's init_dist calls torch.cuda.set_device and its DDP wrapper passes
        # device_ids=[LOCAL_RANK]: both fail without CUDA. Start gloo here (env:// from torchrun's
        # variables) and wrap with DDP on the CPU.
        if launcher == "pytorch" and not torch.distributed.is_initialized():
            torch.distributed.init_process_group(backend="gloo")
        cfg.model_wrapper_cfg = dict(type="MMDistributedDataParallel", device_ids=None, broadcast_buffers=False,
                                     find_unused_parameters=cfg.get("find_unused_parameters", False))

    world = world_size(launcher)
    sched = resolve_schedule(dict(cfg.schedule), cfg.train_dataloader.batch_size, world, accum)
    derived = apply_schedule(cfg, sched)

    backend = data_backend(cfg)
    if backend == "dali":
        cfg.train_dataloader[DALI_KEY] = dict(cfg.data.get("dali") or {})
    add_progress_hook(cfg, "distill")
    run_info = dict(sched, amp="bf16" if use_amp else "fp32", demo=bool(demo), launcher=launcher, data_backend=backend)
    for hook in cfg.get("custom_hooks", []):
        if hook.get("type") == "ComadRunHook":
            hook["run_info"] = dict(hook.get("run_info") or {}, **run_info)
    print_log(f"schedule: effective batch {sched['effective_batch']} ({world} process(es) x {sched['batch_size']} x "
              f"{accum} accumulation), lr {sched['lr']:.3g}, {sched['max_iters']} iterations, "
              f"{sched['warmup_iters']} warm-up; AMP: {run_info['amp']}; data: {backend}"
              + ("" if cuda else " (no CUDA device)"), logger="current")
    if derived:  # the config on disk describes its own GPU count; this run's differs
        print_log(f"derived for this run from `schedule` (the config states {cfg.get('gpus', '?')} GPU(s)): "
                  + "; ".join(derived) + f". The config run is written to {Path(cfg.work_dir) / Path(cfg.filename).name} "
                  "(mmengine's dump)", logger="current")

    if resume:
        ckpt = latest_checkpoint(cfg.work_dir)
        if ckpt is None:
            raise FileNotFoundError(f"--resume: no checkpoint (iter_*.pth) in {cfg.work_dir}; start without --resume")
        cfg.resume = True
        cfg.load_from = str(ckpt)
        print_log(f"resuming from {ckpt}", logger="current")
    return ComadRunner.from_cfg(cfg)
