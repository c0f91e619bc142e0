"""Export the student encoder for transfer.

Layout of an exported student folder (``<work_dir>/student/``):

- ``student.safetensors`` — the encoder alone, timm key names, no head, a 197-token
  ``pos_embed`` for 224² (no extra tokens); metadata ``format=comad-student`` and ``arch``
  (JSON: img_size, patch_size, embed_dim, depth, num_heads). timm loads it with
  ``timm.create_model('vit_tiny_patch16_224', num_classes=0, pretrained=True,
  pretrained_cfg_overlay=dict(file=<path>))``.
- ``student.pth`` — ``{'state_dict': <same keys>, 'meta': {...}}`` for the MMSeg/MMDet
  backbone (``transfer.backbone``), loadable with ``torch.load(weights_only=True)``.
- ``config.json`` — the timm ``pretrained_cfg`` plus ``meta`` (provenance).

:mod:`comad.checkpoint` reads both weight files (its ``comad_student`` and
``comad_student_pth`` layouts) for every task.

``work_dirs/LATEST_STUDENT`` (beside the work dirs) names the last exported
``student.safetensors``; ``tools/run_transfer.sh`` uses it when no ``--student`` is given.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .io import atomic_save_safetensors, atomic_torch_save, atomic_write_json, atomic_write_text

__all__ = ["vit_arch", "student_state_dict", "export_student", "LATEST_POINTER"]

LATEST_POINTER = "LATEST_STUDENT"


def vit_arch(vit: nn.Module) -> dict[str, int]:
    """Architecture of a timm ViT: img_size, patch_size, embed_dim, depth, num_heads."""
    return dict(
        img_size=int(vit.patch_embed.img_size[0]),
        patch_size=int(vit.patch_embed.patch_size[0]),
        embed_dim=int(vit.embed_dim),
        depth=len(vit.blocks),
        num_heads=int(vit.blocks[0].attn.num_heads),
    )


def student_state_dict(vit: nn.Module) -> dict[str, torch.Tensor]:
    """Encoder weights with timm names, without any classifier head."""
    return {k: v.detach().cpu().clone() for k, v in vit.state_dict().items() if not k.startswith(("head.", "fc_norm."))}


def export_student(vit: nn.Module, out_dir: str | Path, meta: dict[str, Any] | None = None,
                   latest_pointer: str | Path | None = None, img_size: int | None = 224) -> Path:
    """Write ``student.safetensors``, ``student.pth`` and ``config.json`` into ``out_dir``.

    Args:
        vit: the student encoder (timm ``VisionTransformer``).
        out_dir: the folder to write.
        meta: provenance recorded in all three files.
        latest_pointer: a text file (atomically) made to name the new student, or None.
        img_size: resolution of the exported position embeddings (224: a 197-token
            ``pos_embed`` whatever the training resolution; resampled bicubically as timm
            does); None keeps the training resolution.

    Returns the path of ``student.safetensors``. Every file is written atomically.
    """
    out = Path(out_dir)
    arch = vit_arch(vit)
    sd = student_state_dict(vit)
    if img_size is not None and img_size != arch["img_size"]:
        from .checkpoint import resample_pos_embed

        grid = img_size // arch["patch_size"]
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], grid, num_prefix_tokens=vit.num_prefix_tokens)
        meta = dict(meta or {}, trained_img_size=arch["img_size"])
        arch["img_size"] = img_size
    meta = dict(meta or {})
    meta["arch"] = arch
    st_path = out / "student.safetensors"
    atomic_save_safetensors(sd, st_path, metadata={"format": "comad-student", "arch": json.dumps(arch),
                                                    "meta": json.dumps(meta, default=str)})
    atomic_torch_save({"state_dict": sd, "meta": json.loads(json.dumps(meta, default=str))}, out / "student.pth")
    pretrained_cfg = dict(
        architecture=f"vit_custom_patch{arch['patch_size']}_{arch['img_size']}",
        num_classes=0, input_size=[3, arch["img_size"], arch["img_size"]],
        mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225], interpolation="bicubic",
        crop_pct=0.9, first_conv="patch_embed.proj", classifier="head",
    )
    atomic_write_json({"pretrained_cfg": pretrained_cfg, "meta": meta}, out / "config.json")
    if latest_pointer is not None:
        atomic_write_text(str(st_path.resolve()) + "\n", latest_pointer)
    return st_path
