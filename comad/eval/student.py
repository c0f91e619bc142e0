"""Load an exported student (or any timm ViT state dict) into a timm ``VisionTransformer``.

Sources, in order of trust:

1. ``student.safetensors`` from :func:`comad.export.export_student` — arch from its metadata.
2. ``student.pth`` (``{'state_dict', 'meta': {'arch'}}``) — arch from ``meta``.
3. Any other timm ViT state dict (a bare dict, or wrapped in ``'model'`` / ``'state_dict'``;
   e.g. a supervised DeiT-Tiny) — arch inferred from tensor shapes; ``num_heads`` cannot be
   read from shapes and is taken as ``embed_dim // 64`` (timm's ViT convention) unless given.

Classifier weights (``head.*``) of a user checkpoint are dropped; everything else is loaded
strictly, and the report lists the missing/unexpected keys (an empty list is a result too).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer

from ..io import CheckpointError, load_state_dict_file

__all__ = ["LoadedStudent", "read_student", "infer_vit_arch", "build_vit", "load_student"]

ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
_CLASSIFIER_PREFIXES = ("head.", "head_dist.")


@dataclass
class LoadedStudent:
    """A built model plus what is needed to report how it was loaded."""

    model: VisionTransformer
    arch: dict[str, Any]
    report: dict[str, Any] = field(default_factory=dict)


def _unwrap(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    meta: dict[str, Any] = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        meta = dict(obj.get("meta") or {})
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"student {path}: expected a state dict of tensors (optionally under 'state_dict' or 'model')")
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    return sd, meta


def read_student(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None, dict[str, Any]]:
    """Read a student file: (state dict, arch from metadata or None, metadata)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student {path}: no such file (expected student.safetensors or student.pth "
                                f"from comad/export.py, or a timm ViT state dict)")
    sd, meta = _unwrap(load_state_dict_file(path), path)
    arch = None
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if "arch" in header:
            try:
                arch = json.loads(header["arch"])
            except json.JSONDecodeError as e:
                raise CheckpointError(f"student {path}: metadata 'arch' is not JSON: {e}") from None
        meta = json.loads(header["meta"]) if "meta" in header else dict(header)
    elif "arch" in meta:
        arch = dict(meta["arch"])
    if arch is not None:
        missing = [k for k in ARCH_KEYS if k not in arch]
        if missing:
            raise CheckpointError(f"student {path}: metadata 'arch' lacks {missing} (has {sorted(arch)})")
    return sd, arch, meta


def infer_vit_arch(sd: dict[str, torch.Tensor], num_heads: int | None = None, source: str = "state dict") -> dict[str, Any]:
    """Arch of a timm ViT from its tensor shapes (+ ``num_heads``, default ``embed_dim // 64``)."""
    need = ("patch_embed.proj.weight", "pos_embed", "blocks.0.attn.qkv.weight", "blocks.0.mlp.fc1.weight")
    missing = [k for k in need if k not in sd]
    if missing:
        raise CheckpointError(f"{source}: not a timm VisionTransformer state dict, missing {missing}")
    if "dist_token" in sd:
        raise CheckpointError(f"{source}: has 'dist_token' (a distilled DeiT); only single-token ViTs are supported")
    if "fc_norm.weight" in sd and "norm.weight" not in sd:
        raise CheckpointError(f"{source}: has 'fc_norm' but no 'norm' (a fine-tuned global-pool model, not an encoder)")
    proj = sd["patch_embed.proj.weight"]
    embed_dim, patch = int(proj.shape[0]), int(proj.shape[-1])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    prefix = 1 if "cls_token" in sd else 0
    n_pos = int(sd["pos_embed"].shape[1]) - prefix
    grid = int(round(n_pos ** 0.5))
    if grid * grid != n_pos:
        raise CheckpointError(f"{source}: pos_embed has {n_pos} patch positions, not a square grid")
    if num_heads is None:
        if embed_dim % 64:
            raise CheckpointError(f"{source}: cannot infer num_heads for embed_dim {embed_dim} (not a multiple of 64); pass num_heads")
        num_heads = embed_dim // 64
    return dict(img_size=grid * patch, patch_size=patch, embed_dim=embed_dim, depth=depth, num_heads=int(num_heads),
                mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / embed_dim,
                qkv_bias="blocks.0.attn.qkv.bias" in sd, class_token=bool(prefix))


def build_vit(arch: dict[str, Any], num_classes: int = 0, global_pool: str = "token", img_size: int | None = None,
              drop_path_rate: float = 0.0) -> VisionTransformer:
    """A timm ``VisionTransformer`` for ``arch`` (img_size overridable)."""
    kwargs = {k: arch[k] for k in ("mlp_ratio", "qkv_bias", "class_token") if k in arch}
    return VisionTransformer(img_size=img_size or arch["img_size"], patch_size=arch["patch_size"],
                             embed_dim=arch["embed_dim"], depth=arch["depth"], num_heads=arch["num_heads"],
                             num_classes=num_classes, global_pool=global_pool, drop_path_rate=drop_path_rate, **kwargs)


def load_student(path: str | Path, img_size: int | None = None, num_classes: int = 0, global_pool: str = "token",
                 drop_path_rate: float = 0.0, num_heads: int | None = None) -> LoadedStudent:
    """Build a timm ViT for a student file and load its encoder weights.

    Args:
        path: ``student.safetensors`` / ``student.pth`` / a timm ViT state dict.
        img_size: input size; when it differs from the student's, ``pos_embed`` is resampled
            (bicubic, ``timm.layers.resample_abs_pos_embed``) and the report says so.
        num_classes: classifier outputs (0: no head; features only).
        global_pool: 'token' (CLS; keeps the final ``norm``) or 'avg' (MAE fine-tune style: mean of
            patch tokens through a freshly initialised ``fc_norm``; the student's ``norm`` is unused).
        drop_path_rate: stochastic depth for fine-tuning.
        num_heads: heads of a user checkpoint without metadata (default ``embed_dim // 64``).

    Raises:
        CheckpointError: unreadable file, wrong arch, or keys that do not fit (named).
    """
    path = Path(path)
    sd, arch, _meta = read_student(path)
    arch_source = "metadata"
    if arch is None:
        arch = infer_vit_arch(sd, num_heads=num_heads, source=f"student {path}")
        arch_source = "shapes (num_heads given)" if num_heads is not None else "shapes (num_heads = embed_dim // 64)"
    dropped = sorted(k for k in sd if k.startswith(_CLASSIFIER_PREFIXES))
    sd = {k: v for k, v in sd.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    model = build_vit(arch, num_classes=num_classes, global_pool=global_pool, img_size=img_size, drop_path_rate=drop_path_rate)
    old_grid = arch["img_size"] // arch["patch_size"]
    new_grid = model.patch_embed.grid_size[0]
    pos_note = f"kept {old_grid}x{old_grid}"
    if new_grid != old_grid and "pos_embed" in sd:
        sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=[new_grid, new_grid], old_size=[old_grid, old_grid],
                                                 num_prefix_tokens=model.num_prefix_tokens, interpolation="bicubic", antialias=True)
        pos_note = f"resampled {old_grid}x{old_grid} -> {new_grid}x{new_grid} (bicubic, antialias)"
    target = model.state_dict()
    for k, v in sd.items():
        if k in target and target[k].shape != v.shape:
            raise CheckpointError(f"student {path}: '{k}' has shape {tuple(v.shape)}, the model built from arch {arch} "
                                  f"expects {tuple(target[k].shape)}")
    result = model.load_state_dict(sd, strict=False)
    allowed_missing = ("head.",) + (("fc_norm.",) if global_pool == "avg" else ())
    allowed_unexpected = ("norm.",) if global_pool == "avg" else ()
    bad_missing = [k for k in result.missing_keys if not k.startswith(allowed_missing)]
    bad_unexpected = [k for k in result.unexpected_keys if not k.startswith(allowed_unexpected)]
    if bad_missing or bad_unexpected:
        raise CheckpointError(f"student {path}: keys do not fit a timm ViT with arch {arch}: missing {bad_missing}, "
                              f"unexpected {bad_unexpected}")
    report = dict(source=str(path), arch_source=arch_source, pos_embed=pos_note, img_size=int(model.patch_embed.img_size[0]),
                  missing_keys=list(result.missing_keys), unexpected_keys=list(result.unexpected_keys),
                  dropped_classifier_keys=dropped, global_pool=global_pool)
    return LoadedStudent(model=model, arch=dict(arch), report=report)
