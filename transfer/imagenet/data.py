"""ImageNet-1K in ImageFolder layout: checks with clear errors; the datasets of the protocols' configs.

The images are read by :class:`comad.data.dataset.ImageFolderDataset` (``type='ComadImageFolder'``,
``transform=dict(kind='timm', ...)``: timm's ``create_transform``), which yields
``dict(inputs, label, ...)``. Registered here (``DATASETS``):

- :class:`ClassBalancedSubset` — ``num_samples`` of a dataset, class-balanced and seeded (the demos' subsets);
- :class:`FeatureDataset` — the pooled features of a :class:`~transfer.imagenet.features.FeatureCache`
  as ``dict(inputs=(D,) float32, label=int)`` (the cached probe and k-NN).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mmengine.registry import DATASETS
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["IMAGENET_LAYOUT", "imagenet_split_dirs", "count_images", "dataset_classes", "ClassBalancedSubset",
           "FeatureDataset"]

IMAGENET_LAYOUT = ("<data_root>/imagenet/train/<class>/*.JPEG and <data_root>/imagenet/val/<class>/*.JPEG "
                   "(torchvision ImageFolder layout; the validation images sorted into class folders)")


def check_split(split_dir: Path) -> list[str]:
    if not split_dir.is_dir():
        raise FileNotFoundError(f"ImageNet split {split_dir}: no such folder; expected layout {IMAGENET_LAYOUT}")
    classes = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if not classes:
        raise FileNotFoundError(f"ImageNet split {split_dir}: no class folders; expected layout {IMAGENET_LAYOUT}")
    first = split_dir / classes[0]
    if not any(f.suffix.lower() in IMG_EXTENSIONS for f in first.iterdir()):
        raise FileNotFoundError(f"ImageNet split {split_dir}: class folder {first} holds no images; expected layout {IMAGENET_LAYOUT}")
    return classes


def imagenet_split_dirs(root: str | Path) -> tuple[Path, Path]:
    """Check ``root/{train,val}/<class>/`` (``root`` = ``<data_root>/imagenet``); return both folders.

    Raises ``FileNotFoundError`` naming the missing/empty folder and the expected layout, or
    ``ValueError`` when train and val have different class folders.
    """
    root = Path(root)
    train, val = root / "train", root / "val"
    tc, vc = check_split(train), check_split(val)
    if tc != vc:
        only_t, only_v = sorted(set(tc) - set(vc))[:5], sorted(set(vc) - set(tc))[:5]
        raise ValueError(f"ImageNet at {root}: train has {len(tc)} classes, val {len(vc)}; they must match "
                         f"(only in train: {only_t}, only in val: {only_v})")
    return train, val


def count_images(split_dir: str | Path) -> int:
    """Images in ``split_dir/<class>/`` (the files the dataset will read), without decoding any."""
    exts = tuple(IMG_EXTENSIONS)
    return sum(1 for c in os.scandir(split_dir) if c.is_dir()
               for f in os.scandir(c.path) if f.name.lower().endswith(exts))


def _through_wrappers(dataset: Any, attr: str) -> Any:
    """The first of ``dataset`` and the datasets it wraps (``.dataset``) that has ``attr``, or None."""
    while dataset is not None and getattr(dataset, attr, None) is None:
        dataset = getattr(dataset, "dataset", None)
    return dataset


def dataset_classes(dataset: Any) -> list[str] | None:
    """The class names of a dataset, looked up through wrappers (``.dataset``)."""
    found = _through_wrappers(dataset, "classes")
    return list(found.classes) if found is not None else None


def _labels(dataset: Any) -> list[int]:
    found = _through_wrappers(dataset, "labels")
    if found is None:
        raise TypeError(f"ClassBalancedSubset: {type(dataset).__name__} has no 'labels' to balance the classes by")
    return [int(y) for y in found.labels]


@DATASETS.register_module()
class ClassBalancedSubset(Dataset):
    """``num_samples`` samples of ``dataset``, class-balanced (stratified) and seeded; all of it when None or larger."""

    def __init__(self, dataset: Dataset | dict[str, Any], num_samples: int | None = None, seed: int = 0) -> None:
        self.dataset = DATASETS.build(dataset) if isinstance(dataset, dict) else dataset
        labels = _labels(self.dataset)
        self.indices = list(range(len(labels)))
        if num_samples and num_samples < len(labels):
            from sklearn.model_selection import train_test_split

            idx, _ = train_test_split(self.indices, train_size=int(num_samples), stratify=labels, random_state=seed)
            self.indices = sorted(idx)
        self.labels = [labels[i] for i in self.indices]
        self.classes = dataset_classes(self.dataset)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.dataset[self.indices[i]]


@DATASETS.register_module()
class FeatureDataset(Dataset):
    """The features of a complete :class:`~transfer.imagenet.features.FeatureCache` folder, in memory."""

    def __init__(self, cache_dir: str | Path) -> None:
        from .features import FeatureCache

        self.features, labels, manifest = FeatureCache(cache_dir).load()
        self.labels = labels.tolist()
        self.classes = list(manifest["key"].get("classes") or []) or None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int | tuple[int, int]) -> dict[str, Any]:
        """Sample ``i``, or ``(i, draw)`` as :class:`~comad.engine.samplers.ResumableInfiniteSampler` yields
        (features have no augmentation to seed)."""
        if isinstance(i, tuple):
            i = i[0]
        return dict(inputs=self.features[i], label=self.labels[i])
