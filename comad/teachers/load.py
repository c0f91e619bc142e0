"""A frozen teacher from a checkpoint file: an MAE / MoCo v3 / iBOT / DINOv2 / timm ViT, or a CNN.

Steps (all in :mod:`comad.checkpoint`): read the file safely, convert its layout to the
network's names, read the architecture (a ViT's from its shapes, heads = width / 64 unless given;
a CNN's from its layout row), check it against the configured expectation (patch size 16 by
default), build the network (a ViT's position embeddings resampled to the input size, as the
layout says), and load it with the exact missing / unexpected key sets asserted (both must be
empty). The family of the file's layout row picks the teacher class: :class:`Teacher` for a
ViT, :class:`~comad.teachers.cnn.CNNTeacher` for a CNN.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from ..checkpoint import FAMILIES, CnnNet, EncoderCheckpoint, check_arch, expected_arch, read_encoder
from ..checkpoint.cnn import CNN_STRIDE, IMAGENET_MEAN, IMAGENET_STD
from ..checkpoint.layouts import FAMILY_NAMES
from ..checkpoint.vit import describe_arch
from ..io import CheckpointError

if TYPE_CHECKING:
    from .cnn import CNNTeacher
    from .teacher import FrozenTeacher, Teacher

__all__ = ["load_teacher", "teacher_img_size"]

logger = logging.getLogger(__name__)


def teacher_img_size(ckpt: EncoderCheckpoint, img_size: int | None, grid: int | None) -> int | None:
    """The input side: ``img_size``, else ``grid`` x the teacher's patch size (a ViT's patch, a CNN's
    stride), else ``None`` (the file's own: a ViT's position grid, 224 for a CNN).

    Raises:
        ValueError: both given and they disagree.
    """
    patch = ckpt.arch["patch_size"] if ckpt.family == "vit" else ckpt.arch["stride"]
    if grid is None:
        return img_size
    if img_size is not None and int(img_size) != int(grid) * patch:
        raise ValueError(f"teacher {ckpt.source}: img_size {img_size} is not grid {grid} x its patch size {patch}; "
                         f"give one of them")
    return int(grid) * patch


def _log(ckpt: EncoderCheckpoint, what: str) -> dict[str, Any]:
    report = {k: ckpt.report[k] for k in ("missing_keys", "unexpected_keys")}
    logger.info("teacher %s (%s, encoder %s) from %s: %s; missing keys %s, unexpected keys %s", ckpt.format,
                Path(ckpt.source).name, ckpt.encoder, ckpt.source, what, report["missing_keys"],
                report["unexpected_keys"])
    return report


def _vit_teacher(ckpt: EncoderCheckpoint, size: int | None, precision: str, arch: Any, patch_size: int | None,
                 **_: Any) -> "Teacher":
    from .teacher import Teacher

    found = {k: v for k, v in ckpt.arch.items() if k != "num_heads"}  # the file's shapes
    check_arch(found, expected_arch(arch, patch_size), str(ckpt.source))
    ckpt = FAMILIES["vit"].load(ckpt, img_size=size)  # comad.checkpoint.load_vit
    report = _log(ckpt, describe_arch(found))
    info = dict(format=ckpt.format, encoder=ckpt.encoder, source=str(ckpt.source), file_arch=found,
                pos_embed=ckpt.report["pos_embed"], pos_antialias=ckpt.report["pos_antialias"], **report)
    return Teacher(ckpt.model, name=ckpt.format, source=str(ckpt.source), encoder=ckpt.encoder, precision=precision,
                   load_info=info)


def _cnn_teacher(ckpt: EncoderCheckpoint, size: int | None, precision: str, arch: Any, patch_size: int | None,
                 num_heads: int | None = None, input_mean: Sequence[float] | None = None,
                 input_std: Sequence[float] | None = None) -> "CNNTeacher":
    from .cnn import CNNTeacher

    vit_only = [k for k, v in (("arch", arch), ("num_heads", num_heads)) if v is not None]
    if vit_only:
        raise ValueError(f"teacher {ckpt.source}: {', '.join(vit_only)} describe a ViT; this file is a CNN ({ckpt.format})")
    if patch_size is not None and patch_size != CNN_STRIDE:
        raise CheckpointError(f"checkpoint {ckpt.source}: patch size is not {patch_size}: a {ckpt.format} CNN teacher "
                              f"is read at stride {CNN_STRIDE} (set patch_size={CNN_STRIDE} or None)")
    size = int(size or 224)
    ckpt = FAMILIES["cnn"].load(ckpt, img_size=size)  # comad.checkpoint.cnn.load_cnn
    net = CnnNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt.arch.items()})
    report = _log(ckpt, f"{net.library}:{net.arch}")
    info = dict(format=ckpt.format, source=str(ckpt.source), arch=f"{net.library}:{net.arch}", taps=list(net.taps),
                **report)
    return CNNTeacher(ckpt.model, net, ckpt.format, str(ckpt.source), img_size=size, precision=precision,
                      input_mean=IMAGENET_MEAN if input_mean is None else input_mean,
                      input_std=IMAGENET_STD if input_std is None else input_std, load_info=info)


_TEACHERS = {"vit": _vit_teacher, "cnn": _cnn_teacher}


def load_teacher(
    path: str | os.PathLike,
    *,
    format: str = "auto",
    encoder: str | None = None,
    arch: str | Mapping[str, int] | None = None,
    num_heads: int | None = None,
    img_size: int | None = None,
    grid: int | None = None,
    patch_size: int | None = 16,
    precision: str = "amp",
    input_mean: Sequence[float] | None = None,
    input_std: Sequence[float] | None = None,
) -> "FrozenTeacher":
    """Load a frozen teacher from a checkpoint file of any layout in :data:`comad.checkpoint.LAYOUTS`.

    Args:
        path: the checkpoint (``.pth``, ``.pth.tar`` or ``.safetensors``).
        format: ``'auto'`` or one of :data:`comad.checkpoint.FORMATS`.
        encoder: MoCo v3 ``base`` (default) | ``momentum``; iBOT ``teacher`` (default) | ``student``.
        arch: optional ViT shape expectation: a preset name (``'vit_base'``) or a dict with
            embed_dim / depth / patch_size; a file that disagrees is refused (an error for a CNN).
        num_heads: attention heads of a ViT (default embed_dim / 64; an error for a CNN).
        img_size: input size; a ViT's position embeddings are resampled to it when it differs
            from the file's grid (bicubic; antialiased unless the layout says otherwise).
        grid: the token grid side instead of ``img_size``: ``img_size = grid x`` the teacher's
            own patch size (a ViT's patch, a CNN's stride 16), e.g. 7 -> 98 px for DINOv2-S/14.
        patch_size: expected patch size (16; ``None`` accepts any); ``arch`` may override it.
        precision: ``amp`` (bf16 autocast on CUDA), ``bf16`` (bf16 weights and forward) or
            ``fp32``; see :class:`comad.teachers.teacher.Teacher`.
        input_mean, input_std: the normalisation (0-1 scale) of the images the teacher will get
            (default ImageNet's). A CNN maps them to its weights' normalisation; a ViT takes the
            images as given (its layouts record no input normalisation).

    Returns:
        :class:`~comad.teachers.teacher.Teacher` (ViT) or :class:`~comad.teachers.cnn.CNNTeacher`.

    Raises:
        FileNotFoundError, CheckpointError (naming the file), ValueError (a bad option).
    """
    ckpt = read_encoder(path, format=format, encoder=encoder, num_heads=num_heads)
    if ckpt.family not in _TEACHERS:
        raise CheckpointError(f"checkpoint {ckpt.source}: no teacher type for the {FAMILY_NAMES.get(ckpt.family, ckpt.family)} "
                              f"family ({ckpt.format})")
    size = teacher_img_size(ckpt, img_size, grid)
    extra = dict(num_heads=num_heads, input_mean=input_mean, input_std=input_std) if ckpt.family == "cnn" else {}
    return _TEACHERS[ckpt.family](ckpt, size, precision, arch, patch_size, **extra)
