"""What a process learns from its launcher and its command line: world size, rank, ``--cfg-options``.

One reading for every entry point (the distillation Runner in :mod:`comad.engine.launch`, the
transfer runner ``transfer/run.py``, the ImageNet tasks in :mod:`transfer.imagenet`):

- ``launcher='pytorch'``: torchrun's ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK``;
- ``launcher='slurm'``: ``SLURM_NTASKS`` / ``SLURM_PROCID`` / ``SLURM_LOCALID`` (srun);
- ``launcher='none'``: one process;
- ``launcher=None`` (not known): torchrun's variables, else SLURM's, else one process.

Plain functions of ``os.environ``; nothing here imports torch or starts a process group.
"""
from __future__ import annotations

import os
from typing import Any, Sequence

__all__ = ["LAUNCHERS", "world_size", "rank", "local_rank", "parse_cfg_options"]

LAUNCHERS = ("none", "pytorch", "slurm")

#: (torchrun variable, SLURM variable) per quantity
_VARS = {"world_size": ("WORLD_SIZE", "SLURM_NTASKS"), "rank": ("RANK", "SLURM_PROCID"),
         "local_rank": ("LOCAL_RANK", "SLURM_LOCALID")}


def _read(what: str, launcher: str | None, default: int) -> int:
    if launcher is not None and launcher not in LAUNCHERS:
        raise ValueError(f"launcher {launcher!r}: expected one of {LAUNCHERS} (or None: whichever set the environment)")
    if launcher == "none":
        return default
    torchrun, slurm = _VARS[what]
    names = {"pytorch": (torchrun,), "slurm": (slurm,), None: (torchrun, slurm)}[launcher]
    for name in names:
        value = os.environ.get(name)
        if value:
            try:
                return int(value)
            except ValueError:
                raise ValueError(f"environment variable {name}={value!r}: expected an integer") from None
    return default


def world_size(launcher: str | None = None) -> int:
    """Processes of this run (1 without a launcher); see the module docstring for the variables."""
    return _read("world_size", launcher, 1)


def rank(launcher: str | None = None) -> int:
    """This process's global rank (0 without a launcher)."""
    return _read("rank", launcher, 0)


def local_rank(launcher: str | None = None) -> int:
    """This process's rank on its node (0 without a launcher)."""
    return _read("local_rank", launcher, 0)


def parse_cfg_options(items: Sequence[str], source: str = "--cfg-options") -> dict[str, Any]:
    """``['a.b=1', 'c=[1,2]']`` -> ``{'a.b': 1, 'c': [1, 2]}``, values parsed by mmengine's ``DictAction``.

    ``source`` names where the items came from in the error for an item without ``=``.
    """
    items = list(items or ())
    if not items:
        return {}
    bad = [i for i in items if "=" not in i]
    if bad:
        raise ValueError(f"cfg option {bad[0]!r}: expected key=value ({source}; got {bad})")
    import argparse

    from mmengine.config import DictAction

    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--cfg-options", nargs="+", action=DictAction, default={})
    return dict(p.parse_args(["--cfg-options", *items]).cfg_options)

