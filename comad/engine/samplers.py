"""Data order and augmentation that a resumed run reproduces exactly.

``ResumableInfiniteSampler`` yields ``(index, draw)`` pairs from mmengine's infinite stream of
seeded permutations (rank r takes draws r, r + W, ...); ``skip(n)`` jumps past n draws without
loading any image. ``PerSampleSeeded`` runs the wrapped dataset's random transforms under a
seed derived from (seed, draw) — torch's, Python's ``random`` and NumPy's (timm's augmentations
draw from the latter two) — so a sample's augmentation does not depend on which worker loads it or
on how long that worker has been running.
"""
from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any, Iterator

import numpy as np
import torch
from mmengine.dataset.sampler import InfiniteSampler
from mmengine.registry import DATASETS
from torch.utils.data import Dataset


class ResumableInfiniteSampler(InfiniteSampler):
    """``InfiniteSampler`` that yields ``(index, draw)`` and can skip draws cheaply.

    Attributes:
        skipped: the draws of this rank the last :meth:`skip` jumped past (0 before any).
    """

    skipped: int = 0

    def _indices_of_rank(self) -> Iterator[tuple[int, int]]:
        stream = zip(self._infinite_indices(), itertools.count())
        return itertools.islice(stream, self.rank, None, self.world_size)

    def skip(self, n: int) -> None:
        """Restart this rank's stream after its first ``n`` draws (indices only, no data)."""
        self.skipped = int(n)
        self.indices = itertools.islice(self._indices_of_rank(), n, None)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        yield from self.indices


def _draw_seed(seed: int, draw: int) -> int:
    return int.from_bytes(hashlib.sha256(f"comad-aug:{seed}:{draw}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


class PerSampleSeeded(Dataset):
    """Wrap a dataset so ``ds[(index, draw)]`` draws its augmentation from seed (seed, draw).

    The torch, Python and NumPy random states are seeded for that one sample and restored after
    it. Plain integer indices pass through unchanged (no reseeding).
    """

    def __init__(self, dataset: Dataset | dict[str, Any], seed: int = 0) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        self.seed = int(seed)

    @property
    def metainfo(self) -> dict[str, Any]:
        return getattr(self.dataset, "metainfo", {})

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: int | tuple[int, int]) -> Any:
        if isinstance(item, int):
            return self.dataset[item]
        index, draw = item
        seed = _draw_seed(self.seed, draw)
        py, npy = random.getstate(), np.random.get_state()
        try:
            with torch.random.fork_rng(devices=[]):
                torch.default_generator.manual_seed(seed)  # the CPU generator the transforms draw from; torch.manual_seed costs ~1 ms
                random.seed(seed)
                np.random.seed(seed % 2**32)
                return self.dataset[index]
        finally:
            random.setstate(py)
            np.random.set_state(npy)
