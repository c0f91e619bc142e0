"""Release checkpoints: a trained model in the form that leaves the project.

A release is what OpenMMLab's ``publish_model`` makes of a training checkpoint: the weights and
plain-data meta only (no optimizer, no message hub, no random states), loadable by stock torch /
mmengine under ``torch.load(weights_only=True)`` with no allow-list, the file named
``<name>-<sha8>.pth`` after the first 8 hex digits of its sha256. Beside it lies a self-contained
config (an mmengine ``.py`` for the dense tasks, a timm ``.json`` for the ImageNet fine-tune) that
builds the model from its architecture alone: no student file, no path of this machine.

A task returns a :class:`Release` in its :class:`~transfer.runner.TaskResult`;
:func:`transfer.runner.finish_task` writes it with :func:`publish` into
``<work_dir>/release/`` and names both files in ``metrics.json`` (key ``release``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from .io import CheckpointError, atomic_torch_save, atomic_write_text, safe_torch_load

__all__ = ["RELEASE_DIR", "Release", "plain_data", "publish"]

RELEASE_DIR = "release"


@dataclass
class Release:
    """A model to publish.

    Attributes:
        name: file stem (``<name>-<sha8>.pth``, ``<name><config_suffix>``).
        state_dict: the weights (moved to the CPU when written).
        meta: plain data (str, int, float, bool, None, lists, tuples, dicts): dataset meta, arch,
            provenance. mmseg's ``init_model`` / mmdet's ``init_detector`` read ``meta['dataset_meta']``.
        config_text: the config file's text.
        config_suffix: ``.py`` (mmengine) or ``.json`` (timm).
    """

    name: str
    state_dict: Mapping[str, torch.Tensor]
    meta: dict[str, Any]
    config_text: str
    config_suffix: str = ".py"


def plain_data(value: Any, where: str = "meta") -> Any:
    """``value`` as the data ``torch.load(weights_only=True)`` takes (numpy scalars / arrays as lists).

    Raises:
        TypeError: naming the key of a value of another type.
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, Mapping):
        return {str(k): plain_data(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain_data(v, f"{where}.{i}") for i, v in enumerate(value)]
        return tuple(items) if isinstance(value, tuple) else items
    if hasattr(value, "tolist") and type(value).__module__.startswith("numpy"):
        return value.tolist()
    raise TypeError(f"release {where}: {type(value).__name__} is not plain data (str, number, bool, None, "
                    f"list, tuple, dict)")


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def publish(release: Release, folder: str | Path) -> dict[str, str]:
    """Write ``<folder>/<name>-<sha8>.pth`` and ``<folder>/<name><suffix>``; returns their paths and the sha256.

    Each file is written atomically; the checkpoint is read back with plain
    ``torch.load(weights_only=True)`` before anything else is touched, and an earlier release of
    the same name (another ``-<sha8>``) is removed only after the new one is in place.

    Raises:
        CheckpointError: a weight is not finite (nothing is published from a diverged model; nothing
            is written), or the written file does not load under ``weights_only=True``.
    """
    from .checkpoint import check_finite

    folder = Path(folder)
    state = {k: v.detach().cpu().contiguous() for k, v in release.state_dict.items()}
    check_finite(state, f"release {release.name} (the trained model)")
    staging = folder / f".{release.name}.staging.pth"  # complete (atomic write) before it gets its name
    atomic_torch_save({"state_dict": state, "meta": plain_data(release.meta)}, staging)
    try:
        safe_torch_load(staging)  # torch.load(weights_only=True); plain_data admits nothing its allow-list adds
    except CheckpointError as e:
        staging.unlink(missing_ok=True)
        raise CheckpointError(f"release {staging}: does not load with torch.load(weights_only=True): {e}") from None
    sha = _file_sha256(staging)
    ckpt = folder / f"{release.name}-{sha[:8]}.pth"
    os.replace(staging, ckpt)
    config = folder / f"{release.name}{release.config_suffix}"
    atomic_write_text(release.config_text, config)
    for old in folder.glob(f"{release.name}-*.pth"):
        if old != ckpt and len(old.stem) == len(ckpt.stem):
            old.unlink()
    return dict(checkpoint=str(ckpt), config=str(config), sha256=sha)
