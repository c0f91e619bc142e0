"""One path from a checkpoint file to an encoder: read, layout, architecture, strict load.

:func:`read_encoder` reads any file of :data:`~comad.checkpoint.layouts.LAYOUTS` safely and
returns an :class:`EncoderCheckpoint` (timm-named tensors, architecture and where it came from,
format, encoder, metadata, source); :func:`load_vit` builds the timm ``VisionTransformer`` for
it, resamples the position embedding to the requested input size and loads the tensors with
the exact missing / unexpected key lists checked. Teachers, the ImageNet probes and fine-tune,
the dense-transfer backbone, the export and the conversion tool all go through here, so they
accept the same files and refuse a wrong one with the same message.

A model family is a :class:`Family` in :data:`FAMILIES` (how its architecture is read, how it
becomes a model); the layout rows name theirs: ``'vit'`` (timm ``VisionTransformer``) and ``'cnn'``
(the torchvision / timm CNNs of :mod:`comad.checkpoint.cnn`, loaded whole).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import Tensor, nn

from ..io import CheckpointError
from .cnn import load_cnn, read_cnn_arch
from .layouts import FAMILY_NAMES, extract_encoder, get_layout
from .read import file_metadata, layout_metadata, read_checkpoint
from .strict import load_strict
from .vit import ARCH_KEYS, build_vit, default_num_heads, read_vit_arch, resample_pos_embed

__all__ = ["EncoderCheckpoint", "Family", "FAMILIES", "read_encoder", "read_arch", "load_strict", "load_vit", "require_vit",
           "check_finite"]


@dataclass
class EncoderCheckpoint:
    """One encoder read from a file (and, after :func:`load_vit`, the model it was loaded into).

    Attributes:
        source: the file.
        format: the layout row that read it (``comad_student``, ``timm``, ``mae``, ...).
        encoder: which encoder of the layout (``encoder``; MoCo v3 ``base`` / ``momentum``; ...).
        family: the model family (``'vit'`` or ``'cnn'``).
        state_dict: the encoder's tensors with timm names (dropped keys removed).
        arch: the architecture (ViT: img_size, patch_size, in_chans, embed_dim, depth, num_heads,
            mlp_ratio, qkv_bias, init_values, num_positions; ``num_heads`` None when unknown;
            CNN: the layout's :class:`~comad.checkpoint.cnn.CnnNet` as a dict).
        arch_source: ``'metadata'``, ``'shapes (num_heads ...)'`` (where the heads came from) or
            ``'layout <name>'`` (a CNN).
        meta: the file's provenance (an exported student's ``meta``; a header; plain top-level values).
        report: source, format, encoder, arch_source, dropped_keys; after a load also img_size,
            missing_keys, unexpected_keys and, for a ViT, pos_embed, pos_antialias, global_pool.
        model: the loaded model (``None`` until :func:`load_vit`).
    """

    source: Path
    format: str
    encoder: str
    family: str
    state_dict: dict[str, Tensor]
    arch: dict[str, Any]
    arch_source: str
    meta: dict[str, Any] = field(default_factory=dict)
    report: dict[str, Any] = field(default_factory=dict)
    model: nn.Module | None = None


@dataclass(frozen=True)
class Family:
    """A model family: ``read_arch(sd, source, layout=, stated=, has_metadata=, num_heads=, timm_name=)
    -> (arch, arch_source)`` and ``load(ckpt, img_size=, **options) -> ckpt`` with ``model`` set."""

    name: str
    read_arch: Callable[..., tuple[dict[str, Any], str]]
    load: Callable[..., EncoderCheckpoint]


def read_encoder(path: str | os.PathLike, *, format: str = "auto", encoder: str | None = None,
                 num_heads: int | None = None, timm_name: str | None = None) -> EncoderCheckpoint:
    """Read a checkpoint file into an :class:`EncoderCheckpoint` (no model is built).

    Args:
        path: ``.safetensors``, ``.pth`` or ``.pth.tar`` in any layout of :data:`LAYOUTS`.
        format: ``'auto'`` (detect from the keys) or a layout name.
        encoder: which encoder of the layout (``None``: its default).
        num_heads: the head count (a config value or option); must agree with the metadata.
        timm_name: a timm model name whose head count applies when the file states none (a
            top-level ``'arch'`` string that timm knows, as timm's ``train.py`` writes, is used too).

    Raises:
        FileNotFoundError, CheckpointError: naming the file and what was expected; a tensor that
            holds NaN or infinity (a diverged export) is refused, named, before anything uses it.
    """
    path = Path(path)
    source = str(path)
    raw = read_checkpoint(path)
    header = file_metadata(path)
    got = extract_encoder(raw, format, encoder, source, header)
    check_finite(got.state_dict, source)
    meta, stated = layout_metadata(got.layout, raw, header, source)
    top_arch = raw.get("arch") if isinstance(raw, Mapping) else None  # timm train.py: the model name
    named = timm_name or (top_arch if isinstance(top_arch, str) else None)
    family = FAMILIES[got.layout.family]
    arch, arch_source = family.read_arch(got.state_dict, source, layout=got.layout, stated=stated, num_heads=num_heads,
                                         timm_name=named, has_metadata=got.layout.metadata is not None)
    classifier = [k for k in got.dropped if k.startswith(("head.", "head_dist."))]
    report = dict(source=source, format=got.layout.name, encoder=got.encoder, arch_source=arch_source,
                  dropped_keys=got.dropped, dropped_classifier_keys=classifier)
    return EncoderCheckpoint(source=path, format=got.layout.name, encoder=got.encoder, family=family.name,
                             state_dict=got.state_dict, arch=arch, arch_source=arch_source, meta=meta, report=report)


def check_finite(state_dict: Mapping[str, Any], source: str) -> None:
    """Refuse weights with a non-finite value, naming the file, the tensors and how many values."""
    import torch

    bad = [(k, int((~torch.isfinite(v)).sum())) for k, v in state_dict.items()
           if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        shown = ", ".join(f"{k} ({n} values)" for k, n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise CheckpointError(f"checkpoint {source}: non-finite weights (NaN or infinity) in {shown}; a diverged "
                              "run's export cannot be used (export an earlier checkpoint: tools/export_student.py)")


def read_arch(path: str | os.PathLike, num_heads: int | None = None) -> dict[str, int]:
    """The :data:`ARCH_KEYS` of a file's encoder (img_size, patch_size, embed_dim, depth, num_heads).

    Raises:
        CheckpointError: as :func:`read_encoder`, or the head count cannot be known.
    """
    ckpt = require_vit(read_encoder(path, num_heads=num_heads), "read_arch")
    arch = dict(ckpt.arch)
    if arch.get("num_heads") is None:
        arch["num_heads"] = default_num_heads(arch["embed_dim"], f"checkpoint {ckpt.source}")
    return {k: int(arch[k]) for k in ARCH_KEYS}


def require_vit(ckpt: EncoderCheckpoint, what: str) -> EncoderCheckpoint:
    """``ckpt`` when it is a ViT; a CheckpointError naming the file, its family and ``what`` otherwise."""
    if ckpt.family != "vit":
        raise CheckpointError(f"checkpoint {ckpt.source}: a {FAMILY_NAMES[ckpt.family]} ({ckpt.format}), not a ViT; "
                              f"{what} takes ViT encoders only (CNNs are teachers: comad.teachers.load_teacher)")
    return ckpt


def load_vit(ckpt: EncoderCheckpoint | str | os.PathLike, *, img_size: int | None = None, num_classes: int = 0,
             global_pool: str = "token", drop_path_rate: float = 0.0, num_heads: int | None = None,
             format: str = "auto", encoder: str | None = None) -> EncoderCheckpoint:
    """Build the timm ``VisionTransformer`` of a checkpoint and load it; returns it with ``model`` set.

    Args:
        ckpt: an :class:`EncoderCheckpoint`, or a file, read with ``format``, ``encoder`` and
            ``num_heads`` as by :func:`read_encoder` (those three apply to a file only).
        img_size: input size; when it differs from the file's position grid, ``pos_embed`` is
            resampled (:func:`~comad.checkpoint.vit.resample_pos_embed`, antialiased unless the
            layout row says ``pos_antialias=False``) and the report says so.
        num_classes: classifier outputs (0: no head); its fresh ``head.*`` is reported missing.
        global_pool: ``'token'`` (CLS + the final norm) or ``'avg'`` (MAE fine-tune: patch mean
            through a fresh ``fc_norm``; the file's ``norm`` is reported unexpected).
        drop_path_rate: stochastic depth.

    Raises:
        CheckpointError: naming the file (not a ViT, heads unknown, shapes or keys that do not fit);
        ValueError: an ``img_size`` that is not a multiple of the patch size.
    """
    if not isinstance(ckpt, EncoderCheckpoint):
        ckpt = read_encoder(ckpt, format=format, encoder=encoder, num_heads=num_heads)
    ckpt = require_vit(ckpt, "load_vit")
    source, arch = str(ckpt.source), ckpt.arch
    heads = arch["num_heads"] or default_num_heads(arch["embed_dim"], f"checkpoint {source}")
    p = arch["patch_size"]
    size = int(img_size or arch["img_size"])
    if size % p:
        raise ValueError(f"img_size {size} is not a multiple of the patch size {p} of {source}")
    sd = dict(ckpt.state_dict)
    old, new = arch["img_size"] // p, size // p
    note, antialias = f"kept {old}x{old}", get_layout(ckpt.format).pos_antialias
    if new != old:
        sd["pos_embed"] = resample_pos_embed(sd["pos_embed"], new, old, antialias=antialias)
        note = f"resampled {old}x{old} -> {new}x{new} (bicubic, {'antialias' if antialias else 'no antialias'})"
    model = build_vit(arch, num_heads=heads, img_size=size, num_classes=num_classes, global_pool=global_pool,
                      drop_path_rate=drop_path_rate)
    allow_missing = (("head.",) if num_classes else ()) + (("fc_norm.",) if global_pool == "avg" else ())
    loaded = load_strict(model, sd, source, allow_missing, ("norm.",) if global_pool == "avg" else ())
    report = dict(ckpt.report, pos_embed=note, pos_antialias=antialias, img_size=size, global_pool=global_pool, **loaded)
    return replace(ckpt, model=model, report=report)


FAMILIES: dict[str, Family] = {"vit": Family("vit", read_vit_arch, load_vit),
                               "cnn": Family("cnn", read_cnn_arch, load_cnn)}
