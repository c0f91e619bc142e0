"""mmengine registry entry for :class:`~comad.data.dataset.ImageFolderDataset` (the only mm edge of
``comad.data``).

Import this module (``custom_imports=dict(imports=['comad.data.registry'])`` in a config) and
write::

    dataset=dict(type='ComadImageFolder', root='data/imagenet', split='train',
                 transform=dict(kind='train', img_size=224, scale=(0.2, 1.0), hflip=0.5))

``transform`` may also be ``dict(kind='eval', ...)`` or omitted; ``demo=dict(...)`` instead of
``root`` builds the packaged demo photos first (:func:`comad.data.demo.make_demo_imagefolder`
with those keyword arguments) and reads them.
"""
from __future__ import annotations

from typing import Any

from mmengine.registry import DATASETS

from .dataset import ImageFolderDataset
from .transforms import build_transform

__all__ = ["build_comad_imagefolder"]


def build_comad_imagefolder(
    root: str | None = None,
    transform: Any = None,
    demo: dict[str, Any] | None = None,
    **kwargs: Any,
) -> ImageFolderDataset:
    """Build an :class:`ImageFolderDataset` from config values (see the module docstring).

    Args:
        root: dataset root; with ``demo`` it is the demo's output folder (default
            ``data/comad_demo``).
        transform: a callable, ``None`` or ``dict(kind='train' | 'eval', **kwargs)``.
        demo: keyword arguments for :func:`comad.data.demo.make_demo_imagefolder`, or ``None``.
        **kwargs: the remaining :class:`ImageFolderDataset` arguments.
    """
    if demo is not None:
        from .demo import make_demo_imagefolder

        root = str(make_demo_imagefolder(root or "data/comad_demo", **demo))
    if root is None:
        raise ValueError("ComadImageFolder: 'root' is required (or 'demo=dict(...)' to build the demo photos)")
    return ImageFolderDataset(root, transform=build_transform(transform), **kwargs)


DATASETS.register_module(name="ComadImageFolder", module=build_comad_imagefolder)
