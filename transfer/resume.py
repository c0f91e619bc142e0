"""Kill-safe checkpoints and an exact resume for the transfer tasks (mmengine ``Runner``).

mmengine's ``IterBasedTrainLoop`` resumes by re-loading (and dropping) the batches already
trained on, which replays the sampler and, with DataLoader workers, each worker's random
stream (``comad.engine``'s ``ResumableIterBasedTrainLoop`` skips the sampler's draws instead, and
``PerSampleSeeded`` seeds each sample's augmentation from its draw: the ImageNet protocols); but the random state of the main process (dropout, drop path, RPN / RoI sampling,
and with ``num_workers=0`` the data augmentation too) restarts from the seed. Here
:class:`ExactResumeHook` stores the Python, NumPy and torch (CPU and CUDA) random states in
every checkpoint, and a resumed run restores them after that replay, just before it loads its
first new batch: a one-process run killed and resumed trains what the uninterrupted run trains.
Under torch.distributed every rank's states are gathered in the iteration a checkpoint is saved
(mmengine saves on rank 0 only) and each rank restores its own, so a multi-GPU run resumes with
the random streams each rank had (drop path, RoI sampling), not rank 0's on every rank.

:func:`safe_checkpointing` makes the checkpoint hook write through ``comad``'s atomic backend
and keep at least two checkpoints (mmengine deletes the oldest kept checkpoint *before* it
writes the next one), and :func:`resume_file` picks the newest complete ``iter_N.pth`` instead
of trusting ``last_checkpoint`` (mmengine writes that file after the checkpoint, with a plain
``open``: a kill in between leaves it naming a deleted file).
"""
from __future__ import annotations

from pathlib import Path
import random
from typing import Any, Iterator

import numpy as np
import torch

from mmengine.config import Config, ConfigDict
from mmengine.dist import all_gather_object, get_rank, get_world_size
from mmengine.hooks import CheckpointHook, Hook
from mmengine.registry import HOOKS

import comad.engine  # noqa: F401 - registers the 'atomic_local' file backend
from comad.engine.launch import latest_checkpoint

__all__ = ["ExactResumeHook", "RNG_KEY", "safe_checkpointing", "resume_file", "rng_state",
           "set_rng_state"]

#: Where a checkpoint keeps the random states (:func:`rng_state`).
RNG_KEY = "rng_state"


def rng_state() -> dict[str, Any]:
    """All RNG states as tensors and primitive types (loadable with ``weights_only=True``); the
    CUDA ones once CUDA is in use (reading them would initialise it)."""
    version, mt, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = dict(
        python=[version, list(mt), gauss],
        numpy=dict(name=name, keys=torch.from_numpy(keys.astype(np.int64)), pos=int(pos),
                   has_gauss=int(has_gauss), cached=float(cached)),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    version, mt, gauss = state["python"]
    random.setstate((version, tuple(mt), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _RestoreAfter:
    """Iterator proxy: after ``skip`` items (the loop's replay), restore ``state``, then pass through."""

    def __init__(self, it: Iterator[Any], skip: int, state: dict[str, Any]) -> None:
        self._it, self._skip, self._state = it, skip, state

    def __iter__(self) -> "_RestoreAfter":
        return self

    def restarted(self, it: Iterator[Any]) -> "_RestoreAfter":
        """The same restore around a new iterator that replays nothing (a loop that skips sampler draws,
        :class:`comad.engine.loops.ResumableIterBasedTrainLoop`)."""
        return _RestoreAfter(it, 0, self._state)

    def __next__(self) -> Any:
        if self._state is not None:
            if self._skip == 0:
                set_rng_state(self._state)
                self._state = None
            else:
                self._skip -= 1
        return next(self._it)


@HOOKS.register_module(force=True)
class ExactResumeHook(Hook):
    """Random states into every checkpoint (every rank's); restored by a resumed run before its first new batch."""

    # Before the CheckpointHook (VERY_LOW) in after_train_iter: the states are gathered there, on
    # every rank, in the iterations whose end the CheckpointHook saves (it saves on rank 0 only).
    priority = "LOW"

    def __init__(self) -> None:
        self._gathered: list[dict[str, Any]] | None = None

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:  # noqa: D102
        if get_world_size() < 2:
            return
        ck = next((h for h in runner.hooks if isinstance(h, CheckpointHook)), None)
        if ck is None or ck.by_epoch:
            return
        if ck.every_n_train_iters(runner, ck.interval, ck.save_begin) or (ck.save_last and ck.is_last_train_iter(runner)):
            self._gathered = all_gather_object(rng_state())

    def before_save_checkpoint(self, runner: Any, checkpoint: dict) -> None:  # noqa: D102
        if self._gathered is not None:
            checkpoint[RNG_KEY] = dict(per_rank=self._gathered)
            self._gathered = None
        else:
            checkpoint[RNG_KEY] = rng_state()

    def after_load_checkpoint(self, runner: Any, checkpoint: dict) -> None:  # noqa: D102
        state = checkpoint.get(RNG_KEY)
        loop = getattr(runner, "_train_loop", None)
        if state is None or loop is None or not hasattr(loop, "dataloader_iterator"):
            return  # not a resume of a training loop (or a checkpoint from before this hook)
        rank, world = get_rank(), get_world_size()
        if "per_rank" in state:
            states = state["per_rank"]
            if len(states) != world:
                runner.logger.warning(f"resume: the checkpoint holds the random states of {len(states)} process(es), "
                                      f"this run has {world}: rank {rank} takes those of rank {rank % len(states)} "
                                      "(the resumed run cannot be exact)")
            state = states[rank % len(states)]
        elif world > 1:
            runner.logger.warning("resume: the checkpoint holds one process's random states; every rank restores "
                                  "them (the resumed run cannot be exact)")
        skip = int(checkpoint["meta"]["iter"])  # the batches IterBasedTrainLoop replays before training
        loop.dataloader_iterator = _RestoreAfter(loop.dataloader_iterator, skip, state)
        runner.logger.info(f"resume: random states of iteration {skip} restored before its next batch"
                           + (f" (rank {rank}'s own)" if world > 1 else ""))


def safe_checkpointing(cfg: Config) -> list[str]:
    """Atomic checkpoint writes, >= 2 kept checkpoints, and :class:`ExactResumeHook`; returns the changes."""
    changes = []
    hooks = cfg.setdefault("default_hooks", ConfigDict())
    ck = hooks.get("checkpoint")
    if ck is None:
        raise KeyError(f"config {cfg.filename}: default_hooks.checkpoint is missing; the task could not resume")
    if not ck.get("backend_args"):
        ck.backend_args = ConfigDict(backend="atomic_local")
        changes.append("default_hooks.checkpoint.backend_args: atomic writes (temp file + rename)")
    keep = int(ck.get("max_keep_ckpts", -1))
    if 0 < keep < 2:
        ck.max_keep_ckpts = 2
        changes.append(f"default_hooks.checkpoint.max_keep_ckpts: {keep} -> 2 (mmengine removes the oldest kept "
                       f"checkpoint before writing the next; with 1 a kill during that write would leave none)")
    custom = list(cfg.get("custom_hooks") or [])
    if not any(h.get("type") in ("ExactResumeHook", ExactResumeHook) for h in custom):
        custom.append(ConfigDict(type="ExactResumeHook"))
        changes.append("custom_hooks: ExactResumeHook (random states in checkpoints, restored on resume)")
    cfg.custom_hooks = custom
    return changes


def resume_file(work_dir: str | Path) -> Path | None:
    """The newest ``iter_N.pth`` in ``work_dir`` (written atomically, so complete), or None."""
    return latest_checkpoint(work_dir)
