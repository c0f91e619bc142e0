"""ImageNet-1K in torchvision ImageFolder layout: checks with clear errors, datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from torchvision.datasets import ImageFolder
from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["IMAGENET_LAYOUT", "imagenet_split_dirs", "build_split"]

IMAGENET_LAYOUT = ("<data_root>/imagenet/train/<class>/*.JPEG and <data_root>/imagenet/val/<class>/*.JPEG "
                   "(torchvision ImageFolder layout; the validation images sorted into class folders)")


def _check_split(split_dir: Path) -> list[str]:
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
    tc, vc = _check_split(train), _check_split(val)
    if tc != vc:
        only_t, only_v = sorted(set(tc) - set(vc))[:5], sorted(set(vc) - set(tc))[:5]
        raise ValueError(f"ImageNet at {root}: train has {len(tc)} classes, val {len(vc)}; they must match "
                         f"(only in train: {only_t}, only in val: {only_v})")
    return train, val


def build_split(split_dir: str | Path, transform: Callable | None) -> ImageFolder:
    """An ``ImageFolder`` over a checked split folder."""
    return ImageFolder(str(split_dir), transform=transform)
