"""Shared plumbing of the evaluation loops: configs, torchrun env, RNG, checkpoints, logs."""
from __future__ import annotations

import datetime as _dt
import logging
import random
import warnings
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from mmengine.config import Config
from torch.utils.data import Sampler

from comad import console
from comad.io import atomic_torch_save, safe_torch_load
from comad.repo import REPO_ROOT
from comad.runtime import local_rank, parse_cfg_options, rank, world_size

__all__ = [
    "CONFIG_DIR", "DistEnv", "init_distributed", "load_task_config", "effective_batch",
    "seed_everything", "rng_state", "set_rng_state", "save_checkpoint", "load_checkpoint",
    "SkipSampler", "RunLog",
]

CONFIG_DIR = REPO_ROOT / "benchmark_configs" / "imagenet"


@dataclass
class DistEnv:
    """Process-group facts from the torchrun environment variables."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str | None = None) -> DistEnv:
    """Read RANK / WORLD_SIZE / LOCAL_RANK (torchrun) and init the process group when needed.

    ``device``: 'cuda' / 'cpu' / None (cuda when available). NCCL on GPUs, gloo on CPUs.
    """
    world, local = world_size("pytorch"), local_rank("pytorch")
    use_cuda = torch.cuda.is_available() if device is None else device.startswith("cuda")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistEnv(rank=rank("pytorch"), world_size=world, local_rank=local, device=dev)


def _check_keys(cfg: Config, options: dict[str, Any], source: str) -> None:
    tree = cfg.to_dict()
    for dotted in options:
        node: Any = tree
        for part in dotted.split("."):
            if not isinstance(node, dict) or part not in node:
                raise KeyError(f"{source}: unknown config key '{dotted}' (not in the config; known top-level keys: "
                               f"{sorted(k for k in cfg.keys() if not k.startswith('_'))})")
            node = node[part]


def load_task_config(path: str | Path, cfg_options: Sequence[str] = ()) -> Config:
    """Load a benchmark config (a benchmark or a demo config), then apply ``cfg_options``.

    ``cfg_options`` are ``key=value`` strings as mmengine's ``--cfg-options`` takes them
    (dotted keys, lists ``[a,b]``). Unknown keys raise ``KeyError`` naming the key and file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config {path}: no such file (configs live in {CONFIG_DIR})")
    cfg = Config.fromfile(str(path))
    parsed = parse_cfg_options(cfg_options, f"config {path}")
    if parsed:
        _check_keys(cfg, parsed, f"cfg_options for config {path}")
        cfg.merge_from_dict(parsed)
    cfg.config_path = str(path)
    return cfg


def effective_batch(cfg: Config, env: DistEnv, log: logging.Logger | None = None) -> int:
    """GPUs x per-GPU batch x accumulation; warns when the GPU count is not the config's."""
    accum = int(cfg.get("accum_iter", 1))
    eff = env.world_size * int(cfg.batch_size) * accum
    wanted = int(cfg.get("num_gpus", env.world_size))
    if wanted != env.world_size:
        msg = (f"config {cfg.get('config_path')} is written for {wanted} GPUs x {cfg.batch_size} x {accum}; running on "
               f"{env.world_size}: effective batch {eff}, lr rescaled by the rule lr = blr * batch / 256")
        warnings.warn(msg, stacklevel=2)
        if log is not None:
            log.warning(msg)
    return eff


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically save a training state (tensors and primitive types only)."""
    atomic_torch_save(state, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training state with :func:`comad.io.safe_torch_load` (``weights_only=True``)."""
    return safe_torch_load(path)


def resume_state(ckpt_path: Path, cfg: Config, resume_key: Any = None) -> dict[str, Any] | None:
    """The checkpoint to resume from (``cfg.resume``, default on), or None for a fresh start.

    Raises ``ValueError`` naming the file when it was made for another run (``resume_key``).
    """
    if not (cfg.get("resume", True) and ckpt_path.is_file()):
        return None
    state = load_checkpoint(ckpt_path)
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
