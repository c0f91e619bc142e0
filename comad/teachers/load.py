"""A frozen teacher from an official MAE / MoCo v3 / iBOT (or any timm ViT) checkpoint.

Steps (all in :mod:`comad.checkpoint`): read the file safely, convert its layout to timm names,
infer the architecture from the shapes (heads = width / 64 unless given), check it against the
configured expectation (patch size 16 by default), build the ViT, resample the position
embedding to the input size, and load it with the exact missing / unexpected key sets asserted
(both must be empty).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from ..checkpoint import FAMILIES, check_arch, expected_arch, read_encoder
from ..checkpoint.vit import describe_arch

if TYPE_CHECKING:
    from .teacher import Teacher

__all__ = ["load_teacher"]

logger = logging.getLogger(__name__)


def load_teacher(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    encoder: str | None = None,
    arch: str | Mapping[str, int] | None = None,
    num_heads: int | None = None,
    img_size: int | None = None,
    patch_size: int | None = 16,
    precision: str = "amp",
) -> "Teacher":
    """Load a frozen teacher from an official MAE / MoCo v3 / iBOT / timm checkpoint.

    Args:
        path: the checkpoint (``.pth``, ``.pth.tar`` or ``.safetensors``).
        format: ``'auto'`` or one of :data:`comad.checkpoint.FORMATS`.
        encoder: MoCo v3 ``base`` (default) | ``momentum``; iBOT ``teacher`` (default) | ``student``.
        arch: optional shape expectation: a preset name (``'vit_base'``) or a dict with
            embed_dim / depth / patch_size; a file that disagrees is refused.
        num_heads: attention heads (default embed_dim / 64).
        img_size: input size; when it differs from the file's position grid, the position
            embeddings are resampled (timm's bicubic ``resample_abs_pos_embed``).
        patch_size: expected patch size (16; ``None`` accepts any); ``arch`` may override it.
        precision: ``amp`` (bf16 autocast on CUDA), ``bf16`` (bf16 weights and forward) or
            ``fp32``; see :class:`comad.teachers.teacher.Teacher`.

    Raises:
        FileNotFoundError, CheckpointError (naming the file), ValueError (a bad option).
    """
    from .teacher import Teacher

    ckpt = read_encoder(path, format=format, encoder=encoder, num_heads=num_heads)
    found = {k: v for k, v in ckpt.arch.items() if k != "num_heads"}  # the file's shapes
    check_arch(found, expected_arch(arch, patch_size), str(ckpt.source))
    ckpt = FAMILIES[ckpt.family].load(ckpt, img_size=img_size)  # 'vit': comad.checkpoint.load_vit
    report = {k: ckpt.report[k] for k in ("missing_keys", "unexpected_keys")}
    info = dict(format=ckpt.format, encoder=ckpt.encoder, source=str(ckpt.source), file_arch=found, **report)
    logger.info("teacher %s (%s, encoder %s) from %s: %s; missing keys %s, unexpected keys %s", ckpt.format,
                Path(ckpt.source).name, ckpt.encoder, ckpt.source, describe_arch(found), report["missing_keys"],
                report["unexpected_keys"])
    return Teacher(ckpt.model, name=ckpt.format, source=str(ckpt.source), encoder=ckpt.encoder, precision=precision,
                   load_info=info)
