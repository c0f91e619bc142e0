"""What an ImageNet task runs in: its config file and its process group (torchrun).

- :func:`load_task_config`: a benchmark or demo config under ``benchmark_configs/imagenet/``, with
  ``--cfg-options`` checked key by key;
- :class:`DistEnv` / :func:`init_distributed`: rank, world size and device from torchrun's variables;
- :func:`effective_batch`: GPUs x per-GPU batch x accumulation, with a warning when the GPU count is
  not the config's.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from mmengine.config import Config

from comad.repo import REPO_ROOT
from comad.runtime import local_rank, parse_cfg_options, rank, world_size

__all__ = ["CONFIG_DIR", "DistEnv", "init_distributed", "load_task_config", "effective_batch"]

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
