"""The ViT student (timm architecture) built from the distillation config's ``model.student.arch``."""
from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import VisionTransformer

from ..checkpoint import build_vit as _build_vit

__all__ = ["build_vit"]


def build_vit(arch: str | dict[str, Any] = "vit_tiny_patch16_224", img_size: int | None = None,
              drop_path_rate: float = 0.0) -> VisionTransformer:
    """A timm ViT encoder without head (:func:`comad.checkpoint.build_vit`; messages name ``student arch``).

    Args:
        arch: a timm model name (``vit_tiny_patch16_224``: dim 192, depth 12, 3 heads) or a
            dict with ``embed_dim``, ``depth``, ``num_heads`` (default embed_dim / 64) and
            optionally ``patch_size``, ``mlp_ratio``, ``img_size`` (tiny students for tests and the demo).
        img_size: input size (default: the architecture's).
        drop_path_rate: stochastic depth.
    """
    return _build_vit(arch, img_size=img_size, drop_path_rate=drop_path_rate, what="student arch")
