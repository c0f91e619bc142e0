"""The one resumable epoch loop of the ImageNet fine-tune and the online linear probe.

As MAE's ``train_one_epoch`` serves both its fine-tune and its linear probe: a protocol says
*what* is trained (a :class:`Learner`: the loss of one micro-batch, the optimizer, the per-step
lr schedule, and optionally an AMP ``GradScaler``, an EMA, gradient clipping, the DDP wrapper);
:class:`EpochLoop` says *how* the epochs go: a seeded ``DistributedSampler`` (``drop_last``)
per epoch, gradient accumulation (``accum_iter``, DDP ``no_sync`` on all but the last
micro-batch), the lr set per optimizer step, ``max_iters``, scalars every ``log_interval``
steps, an optional callback at epoch ends (the fine-tune's periodic evaluation) and exact resume.

Resume: ``<work_dir>/checkpoint_last.pth``, written atomically at every ``checkpoint_interval``-th
epoch end (default 1), at the last epoch and when ``max_iters`` stops the run, holds the
learner's states, the position (epoch, micro-batch within the epoch, optimizer step), every RNG
state and the run's key, as tensors and primitive types only (so
:func:`comad.io.safe_torch_load`, ``weights_only=True``, reads it). A checkpoint made for another
key (student, config, seed, schedule) is refused. With ``num_workers=0`` a resumed run is
bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import logging
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from mmengine.config import Config
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from comad import console
from comad.io import atomic_torch_save, safe_torch_load
from comad.nonfinite import stop_if_nonfinite
from ..resume import rng_state, seed_everything, set_rng_state
from .env import DistEnv

__all__ = ["CHECKPOINT", "Learner", "EpochLoop", "log_step", "RunLog", "SkipSampler", "resume_state"]

CHECKPOINT = "checkpoint_last.pth"


def resume_state(ckpt_path: Path, cfg: Config, resume_key: Any = None) -> dict[str, Any] | None:
    """The checkpoint to resume from (``cfg.resume``, default on), or None for a fresh start.

    Raises ``ValueError`` naming the file when it was made for another run (``resume_key``).
    """
    if not (cfg.get("resume", True) and ckpt_path.is_file()):
        return None
    state = safe_torch_load(ckpt_path)
    if resume_key is not None and state.get("key") != resume_key:
        raise ValueError(f"checkpoint {ckpt_path}: made for {state.get('key')}, this run is {resume_key}; "
                         f"use another work dir or delete the checkpoint")
    return state


class SkipSampler(Sampler):
    """Wraps a sampler with ``set_epoch``; skips the first ``skip`` indices of the current epoch."""

    def __init__(self, base: Sampler, skip: int = 0) -> None:
        self.base, self.skip = base, skip

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.base.set_epoch(epoch)
        self.skip = skip

    def __iter__(self) -> Iterator[int]:
        return islice(iter(self.base), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.base) - self.skip)


class RunLog:
    """Text log and mmengine-style scalars for one run.

    Writes ``<work_dir>/<timestamp>/<timestamp>.log`` and
    ``<work_dir>/<timestamp>/vis_data/scalars.json`` (JSON lines, mmengine's
    ``LocalVisBackend``), the layout ``tools/make_tables.py`` reads. Only rank 0 writes.
    The console gets warnings and, after :meth:`progress`, one bar that :meth:`scalars` moves;
    every line with ``--verbose`` / ``COMAD_VERBOSE=1`` (:mod:`comad.console`).
    """

    def __init__(self, work_dir: str | Path, name: str, enabled: bool = True) -> None:
        self.enabled = enabled
        stamp = _dt.datetime.now().strftime("%Y%m%d_%H%M%S")
        if enabled:  # one folder per launch, also for two launches within the same second
            base, n = stamp, 1
            while (Path(work_dir) / stamp).exists():
                stamp, n = f"{base}_{n}", n + 1
        self.dir = Path(work_dir) / stamp
        self.logger = logging.getLogger(f"transfer.imagenet.{name}.{stamp}.{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self._backend = None
        self.name, self._bar = name, None
        if enabled:
            from mmengine.visualization import LocalVisBackend

            (self.dir / "vis_data").mkdir(parents=True, exist_ok=True)
            fh = logging.FileHandler(self.dir / f"{stamp}.log")
            fh.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(message)s"))
            sh = logging.StreamHandler()
            sh.setFormatter(logging.Formatter(f"[{name}] %(message)s"))
            sh.setLevel(logging.INFO if console.verbose() else logging.WARNING)
            self.logger.addHandler(fh)
            self.logger.addHandler(sh)
            self._backend = LocalVisBackend(save_dir=str(self.dir / "vis_data"))
        else:
            self.logger.addHandler(logging.NullHandler())

    def info(self, msg: str) -> None:
        self.logger.info(msg)

    def warning(self, msg: str) -> None:
        self.logger.warning(msg)

    @property
    def file(self) -> Path:
        """The text log."""
        return self.dir / f"{self.dir.name}.log"

    def progress(self, total: int, initial: int = 0) -> None:
        """Open the console bar of this run (``total`` steps; :func:`comad.console.stage_bar`)."""
        if self.enabled and self._bar is None:
            self._bar = console.stage_bar(self.name, int(total), int(initial))

    def scalars(self, values: dict[str, float], step: int) -> None:
        """Append one JSON line ``{..., 'step': step}`` to ``scalars.json``; move the bar to ``step``."""
        if self._backend is not None:
            self._backend.add_scalars({k: float(v) for k, v in values.items()}, step=int(step))
        if self._bar is not None:
            self._bar.update(max(0, min(int(step), self._bar.total) - self._bar.n))
            shown = next((k for k in ("top1", "loss") if k in values), None)
            if shown:
                self._bar.set_postfix_str(f"{shown} {float(values[shown]):.4g}", refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        for h in list(self.logger.handlers):
            h.close()
            self.logger.removeHandler(h)


@dataclass
class Learner:
    """What one optimizer step trains.

    ``loss(images, target)`` takes a batch as the loader gives it and returns the scalar loss
    (device moves, augmentation such as mixup and the forward pass are the protocol's). Its
    states go into the checkpoint as ``{state_name: module, 'optimizer', 'scheduler', 'scaler'
    (when given), 'ema' (when given)}``.
    """

    module: nn.Module
    loss: Callable[[Tensor, Tensor], Tensor]
    optimizer: torch.optim.Optimizer
    scheduler: Any  # timm scheduler: step_update(num_updates)
    state_name: str = "model"
    scaler: torch.amp.GradScaler | None = None
    ema: Any = None  # timm ModelEmaV3
    clip_grad: float | None = None
    ddp: nn.Module | None = None  # the DDP wrapper the loss runs through (no_sync while accumulating)

    def backward(self, images: Tensor, target: Tensor, accum: int = 1, sync: bool = True) -> Tensor:
        """Loss of one micro-batch, its gradient (scaled by 1 / ``accum``) accumulated; returns the loss."""
        quiet = self.ddp.no_sync() if self.ddp is not None and not sync else contextlib.nullcontext()
        with quiet:
            loss = self.loss(images, target)
            (self.scaler.scale(loss / accum) if self.scaler is not None else loss / accum).backward()
        return loss

    def optimizer_step(self, step: int) -> None:
        """Clip, step (through the scaler), zero the grads, set the lr of step ``step``, update the EMA."""
        if self.clip_grad:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.module.parameters(), self.clip_grad)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step_update(step)
        if self.ema is not None:
            self.ema.update(self.module, step=step)

    def parts(self) -> dict[str, Any]:
        named = {self.state_name: self.module, "optimizer": self.optimizer, "scheduler": self.scheduler}
        named.update({k: v for k, v in (("scaler", self.scaler), ("ema", self.ema)) if v is not None})
        return named

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts().items()}

    def load_state_dict(self, state: dict[str, Any], source: Path) -> None:
        for name, part in self.parts().items():
            if name not in state:
                raise ValueError(f"checkpoint {source}: has no '{name}' state, which this run needs "
                                 f"(it holds {sorted(k for k in state if isinstance(state[k], dict))})")
            part.load_state_dict(state[name])


def log_step(log: RunLog | None, loss: Tensor, optimizer: torch.optim.Optimizer, epoch: int, step: int,
             interval: int) -> None:
    """One scalars line (loss, lr, epoch, iter) at step 1 and every ``interval`` steps."""
    if log is not None and (step % interval == 0 or step == 1):
        lr = max(g["lr"] for g in optimizer.param_groups)
        log.scalars(dict(loss=loss.item(), lr=lr, epoch=epoch, iter=step), step)


class EpochLoop:
    """Epochs over ``train_set`` with this process's shard of it (see the module docstring).

    ``cfg`` keys: ``epochs``, ``batch_size`` (per process), ``num_workers``, ``log_interval``;
    optional ``accum_iter`` (1), ``checkpoint_interval`` (1 epoch), ``resume`` (True).
    ``what`` names the protocol in errors.
    """

    def __init__(self, train_set: Dataset, cfg: Any, env: DistEnv, seed: int, what: str) -> None:
        self.cfg, self.env, self.seed = cfg, env, seed
        self.bs, self.accum = int(cfg.batch_size), int(cfg.get("accum_iter", 1))
        base = DistributedSampler(train_set, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=seed,
                                  drop_last=True)
        self.sampler = SkipSampler(base)
        self.loader = DataLoader(train_set, batch_size=self.bs, sampler=self.sampler, num_workers=cfg.num_workers,
                                 drop_last=True, pin_memory=env.device.type == "cuda",
                                 generator=torch.Generator().manual_seed(seed))
        self.steps_per_epoch = (len(base) // self.bs) // self.accum
        if self.steps_per_epoch < 1:
            per = f"batch_size {self.bs}" + (f" x accum_iter {self.accum}" if self.accum > 1 else "")
            raise ValueError(f"{what}: {len(base)} samples per process < {per}")
        self.batches_per_epoch = self.steps_per_epoch * self.accum

    def run(self, learner: Learner, work_dir: str | Path, max_iters: int | None = None, log: RunLog | None = None,
            resume_key: Any = None, on_epoch_end: Callable[[int, int], None] | None = None) -> tuple[int, int]:
        """Train (resuming from ``work_dir``) to ``cfg.epochs`` or ``max_iters`` optimizer steps.

        ``on_epoch_end(epoch, step)`` runs after each completed epoch but the last (not after a
        ``max_iters`` stop). Returns (optimizer steps, completed epochs).
        """
        path = Path(work_dir) / CHECKPOINT
        epoch, skip, step = self._start(learner, path, resume_key, log)
        epochs, every = int(self.cfg.epochs), int(self.cfg.get("checkpoint_interval", 1))
        if log is not None:
            total = epochs * self.steps_per_epoch
            log.progress(min(total, max_iters) if max_iters is not None else total, step)
        stop = max_iters is not None and step >= max_iters
        while epoch < epochs and not stop:
            i, step, stop = self.train_one_epoch(learner, epoch, skip, step, max_iters, log)
            skip = 0
            if i >= self.batches_per_epoch:
                epoch, i = epoch + 1, 0
                if on_epoch_end is not None and epoch < epochs and not stop:
                    on_epoch_end(epoch, step)
            if stop or epoch >= epochs or epoch % every == 0:
                self._save(path, learner, epoch, i, step, resume_key)
        return step, epoch

    def train_one_epoch(self, learner: Learner, epoch: int, skip: int, step: int, max_iters: int | None,
                        log: RunLog | None) -> tuple[int, int, bool]:
        """Micro-batches ``skip, skip+1, ...`` of ``epoch``; returns (micro-batches done, steps, stopped)."""
        self.sampler.set_epoch(epoch, skip=skip * self.bs)
        learner.module.train()
        i = skip
        for images, target in self.loader:
            if i >= self.batches_per_epoch:
                break
            i += 1
            last = i % self.accum == 0
            loss = learner.backward(images, target, self.accum, sync=last)
            stop_if_nonfinite(loss, step + 1)  # before any update of this step
            if not last:
                continue
            step += 1
            learner.optimizer_step(step)
            log_step(log, loss, learner.optimizer, epoch, step, self.cfg.log_interval)
            if max_iters is not None and step >= max_iters:
                return i, step, True
        return i, step, False

    def _start(self, learner: Learner, path: Path, resume_key: Any, log: RunLog | None) -> tuple[int, int, int]:
        """(epoch, micro-batch, step) to start from: a resumed checkpoint's, or a fresh seeded start."""
        state = resume_state(path, self.cfg, resume_key)
        if state is None:
            seed_everything(self.seed + self.env.rank)  # python, numpy, torch: augmentations, mixup, drop path
            return 0, 0, 0
        learner.load_state_dict(state, path)
        set_rng_state(state["rng"])
        epoch, skip, step = state["epoch"], state["iter_in_epoch"], state["step"]
        if log is not None:
            log.info(f"resumed from {path}: epoch {epoch}, micro-batch {skip}, step {step}")
        return epoch, skip, step

    def _save(self, path: Path, learner: Learner, epoch: int, iter_in_epoch: int, step: int, key: Any) -> None:
        if self.env.is_main:
            atomic_torch_save(dict(learner.state_dict(), epoch=epoch, iter_in_epoch=iter_in_epoch, step=step,
                                   rng=rng_state(), key=key), path)
