"""The train data loader of a distillation config: mmengine's DataLoader or the DALI loader.

The config's ``data.backend`` chooses (``_base_/imagenet_data.py``)::

    data = dict(backend='torch')   # DataLoader workers: PIL decode + RandomResizedCrop (default)
    data = dict(backend='dali', dali=dict(num_threads=None, device='auto', prefetch=2,
                                          read_threads=4, hw_decoder_load=0.65))

With ``'dali'`` the same ``train_dataloader`` entry is read: its dataset (``ComadImageFolder``,
optionally inside ``PerSampleSeeded``, whose ``seed`` seeds DALI's crops), its train transform
(crop scale, ratio, interpolation, flip: :meth:`comad.data.dali.CropSpec.from_transform`), its
sampler (the same ``ResumableInfiniteSampler``, so the same files in the same order on every
rank) and ``batch_size``. ``num_workers`` is DALI's thread count unless ``dali.num_threads`` is
set; the DataLoader-only keys (``persistent_workers``, ``pin_memory``, ``prefetch_factor``,
``collate_fn``) do not apply. :func:`comad.engine.launch.build_runner` puts ``data.dali`` into
``train_dataloader`` under :data:`DALI_KEY`; ``ComadRunner.build_dataloader`` sends such an
entry here.
"""
from __future__ import annotations

import copy
from typing import Any

import torch
from mmengine.registry import DATA_SAMPLERS, DATASETS
from mmengine.runner import Runner

__all__ = ["BACKENDS", "DALI_KEY", "DALI_OPTIONS", "data_backend", "build_dataloader", "build_dali_loader"]

BACKENDS = ("torch", "dali")
#: the key of ``train_dataloader`` that marks the DALI loader (its value: the ``data.dali`` options)
DALI_KEY = "dali"
#: ``data.dali`` options and their defaults (``num_threads=None``: the entry's ``num_workers``, at least 1)
DALI_OPTIONS: dict[str, Any] = dict(num_threads=None, device="auto", prefetch=2, read_threads=4, hw_decoder_load=0.65)


def data_backend(cfg: Any) -> str:
    """The config's ``data.backend`` (default ``'torch'``), checked."""
    data = cfg.get("data") or {}
    backend = data.get("backend", "torch")
    if backend not in BACKENDS:
        raise ValueError(f"config key data.backend must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r}")
    unknown = sorted(set(data.get("dali") or {}) - set(DALI_OPTIONS))
    if unknown:
        raise ValueError(f"config key data.dali: unknown option(s) {unknown}; known: {sorted(DALI_OPTIONS)}")
    return backend


def build_dataloader(dataloader: Any, seed: int | None = None, diff_rank_seed: bool = False) -> Any:
    """mmengine's ``Runner.build_dataloader``, or :func:`build_dali_loader` for an entry with :data:`DALI_KEY`."""
    if isinstance(dataloader, dict) and DALI_KEY in dataloader:
        cfg = dict(dataloader)
        options = cfg.pop(DALI_KEY) or {}
        return build_dali_loader(cfg, options, seed, diff_rank_seed)
    return Runner.build_dataloader(dataloader, seed=seed, diff_rank_seed=diff_rank_seed)


def _device_id(device: str) -> int | None:
    if device not in ("auto", "cpu", "gpu"):
        raise ValueError(f"config key data.dali.device must be 'auto', 'cpu' or 'gpu', got {device!r}")
    if device == "gpu" and not torch.cuda.is_available():
        raise ValueError("data.dali.device='gpu' needs a CUDA device; none is available (use 'auto' or 'cpu')")
    return torch.cuda.current_device() if device != "cpu" and torch.cuda.is_available() else None


def build_dali_loader(dataloader: dict[str, Any], options: dict[str, Any], seed: int | None = None,
                      diff_rank_seed: bool = False) -> Any:
    """The :class:`~comad.data.dali_loader.DaliTrainLoader` of a ``train_dataloader`` entry (see the module docstring).

    Args:
        dataloader: the entry (``dataset``, ``sampler``, ``batch_size``, ``num_workers`` ...).
        options: ``data.dali`` (keys of :data:`DALI_OPTIONS`).
        seed, diff_rank_seed: as mmengine's ``Runner.build_dataloader`` (the sampler's seed).
    """
    from ..data.dali import CropSpec
    from ..data.dali_loader import DaliTrainLoader
    from ..data.transforms import build_transform

    opts = dict(DALI_OPTIONS, **options)
    cfg = copy.deepcopy(dataloader)
    ds_cfg = cfg.pop("dataset")
    aug_seed = 0
    if ds_cfg.get("type") == "PerSampleSeeded":
        aug_seed = int(ds_cfg.get("seed", 0))
        ds_cfg = ds_cfg["dataset"]
    if ds_cfg.get("type") != "ComadImageFolder":
        raise ValueError(f"data.backend='dali' reads a ComadImageFolder dataset (optionally in PerSampleSeeded), "
                         f"got train_dataloader.dataset type {ds_cfg.get('type')!r}")
    spec = CropSpec.from_transform(build_transform(ds_cfg.get("transform")))
    dataset = DATASETS.build(dict(ds_cfg, transform=None))
    sampler = DATA_SAMPLERS.build(cfg["sampler"], default_args=dict(dataset=dataset,
                                                                    seed=None if diff_rank_seed else seed))
    threads = opts["num_threads"] or max(1, int(cfg.get("num_workers") or 1))
    return DaliTrainLoader(dataset, sampler, int(cfg["batch_size"]), spec, num_threads=int(threads),
                           device_id=_device_id(opts["device"]), seed=aug_seed, prefetch=int(opts["prefetch"]),
                           read_threads=int(opts["read_threads"]), hw_decoder_load=float(opts["hw_decoder_load"]))
