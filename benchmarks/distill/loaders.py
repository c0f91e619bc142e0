"""Where a row's images come from: synthetic device buffers, or JPEG files decoded on the CPU
(the training pipeline) or by DALI (the training
pipeline of ``data.backend='dali'``, :mod:`comad.data.dali_loader`).

Every loader yields normalised (B, 3, S, S) float32 batches on the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor

__all__ = ["synthetic_batches", "cpu_decode_batches", "dali_batches", "LOADERS",
           "build_loader"]


def synthetic_batches(batch: int, img_size: int, device: torch.device, seed: int = 0) -> Iterator[Tensor]:
    """Two random (not zero) image buffers on the device, alternated, without end."""
    g = torch.Generator(device=device).manual_seed(seed)
    bufs = [torch.randn(batch, 3, img_size, img_size, device=device, generator=g) for _ in range(2)]
    i = 0
    while True:
        yield bufs[i % 2]
        i += 1


def _loader(ds: Any, batch: int, num_batches: int, workers: int, device: torch.device, prefetch: int, seed: int,
            **kw: Any) -> Any:
    """A DataLoader of ``num_batches`` random batches of ``ds`` (pinned on CUDA, persistent workers)."""
    from torch.utils.data import DataLoader, RandomSampler

    sampler = RandomSampler(ds, num_samples=batch * num_batches, generator=torch.Generator().manual_seed(seed))
    return DataLoader(ds, sampler=sampler, batch_size=batch, num_workers=workers, pin_memory=device.type == "cuda",
                      drop_last=True, persistent_workers=workers > 0, prefetch_factor=prefetch if workers > 0 else None,
                      **kw)


def cpu_decode_batches(data: Path, img_size: int, batch: int, num_batches: int, workers: int, device: torch.device,
                       prefetch: int, seed: int = 0) -> Iterator[Tensor]:
    """Decode + RandomResizedCrop + flip in DataLoader workers (the training pipeline), uint8
    through pinned memory, normalised on the device (what the configs' ComadDataPreprocessor does)."""
    from comad.data import ImageFolderDataset, build_train_transform
    from comad.data.transforms import Normalize255

    ds = ImageFolderDataset(data, split="train", transform=build_train_transform(img_size, normalize=False),
                            on_corrupt="error")
    norm = Normalize255().to(device)
    for b in _loader(ds, batch, num_batches, workers, device, prefetch, seed):
        yield norm(b["inputs"].to(device, non_blocking=True))


def dali_batches(data: Path, img_size: int, batch: int, num_batches: int, workers: int, device: torch.device,
                 prefetch: int, seed: int = 0) -> Iterator[Tensor]:
    """The DALI train loader with ``workers`` CPU threads (``mixed`` decoder and GPU resize on
    CUDA; DALI's CPU mode otherwise) on random draws, normalised on the device."""
    import numpy as np

    from comad.data import ImageFolderDataset, build_train_transform
    from comad.data.dali import CropSpec
    from comad.data.dali_loader import DaliTrainLoader
    from comad.data.transforms import Normalize255

    ds = ImageFolderDataset(data, split="train", on_corrupt="error")
    spec = CropSpec.from_transform(build_train_transform(img_size, normalize=False))
    draws = np.random.default_rng(seed).integers(0, len(ds), batch * num_batches).tolist()
    device_id = (device.index if device.index is not None else torch.cuda.current_device()) if device.type == "cuda" else None
    loader = DaliTrainLoader(ds, draws, batch, spec, num_threads=max(1, workers), device_id=device_id, seed=seed,
                             prefetch=prefetch)
    norm = Normalize255().to(device)
    for b in loader:
        yield norm(b["inputs"].to(device, non_blocking=True))


#: loader kinds of :func:`build_loader`: (data, img_size, batch, num_batches, workers, device, prefetch, seed)
LOADERS: dict[str, Callable[..., Iterator[Tensor]]] = {"cpu": cpu_decode_batches, "dali": dali_batches}


def build_loader(kind: str, data: Path, img_size: int, batch: int, num_batches: int, workers: int,
                 device: torch.device, prefetch: int, seed: int = 0) -> Iterator[Tensor]:
    """An iterator of ``num_batches`` normalised (B, 3, S, S) device batches from the JPEGs under
    ``data/train``, decoded as ``kind`` says (a key of :data:`LOADERS`)."""
    if kind not in LOADERS:
        raise ValueError(f"loader kind must be one of {sorted(LOADERS)}, got {kind!r}")
    return LOADERS[kind](data, img_size, batch, num_batches, workers, device, prefetch, seed)
