"""The ViT student (timm architecture) built from a name or explicit sizes."""
from __future__ import annotations

from typing import Any

import timm
from timm.models.vision_transformer import VisionTransformer

__all__ = ["build_vit"]


def build_vit(arch: str | dict[str, Any] = "vit_tiny_patch16_224", img_size: int | None = None,
              drop_path_rate: float = 0.0) -> VisionTransformer:
    """A timm ViT encoder without head.

    Args:
        arch: a timm model name (``vit_tiny_patch16_224``: dim 192, depth 12, 3 heads) or a
            dict with ``embed_dim``, ``depth``, ``num_heads`` and optionally ``patch_size``,
            ``mlp_ratio`` (tiny students for tests and the demo).
        img_size: input size (default: the architecture's).
        drop_path_rate: stochastic depth.
    """
    kw: dict[str, Any] = dict(num_classes=0, drop_path_rate=drop_path_rate)
    if img_size is not None:
        kw["img_size"] = img_size
    if isinstance(arch, str):
        model = timm.create_model(arch, pretrained=False, **kw)
    else:
        unknown = set(arch) - {"embed_dim", "depth", "num_heads", "patch_size", "mlp_ratio", "img_size"}
        if unknown:
            raise ValueError(f"student arch: unknown keys {sorted(unknown)}; expected embed_dim, depth, num_heads, patch_size, mlp_ratio")
        a = dict(arch)
        kw.setdefault("img_size", a.pop("img_size", 224))
        model = VisionTransformer(**a, **kw)
    if not isinstance(model, VisionTransformer):
        raise ValueError(f"student arch {arch!r} is not a timm VisionTransformer")
    return model

