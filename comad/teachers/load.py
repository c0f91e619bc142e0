"""Safe, strict loading of a teacher checkpoint into a frozen timm ``VisionTransformer``.

Steps: read the file safely (``weights_only=True`` + allow-list, or safetensors), convert the
layout to timm names (:mod:`comad.teachers.formats`), infer the architecture from the shapes
(patch size, width, depth, MLP ratio, position grid; heads = width / 64 unless given), check it
against the configured expectation (patch size 16 by default), build the ViT and load it with
the exact missing / unexpected key sets asserted (both must be empty).
"""
from __future__ import annotations

import logging
import math
import os
import re
import struct
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from ..io import CheckpointError, load_state_dict_file
from .formats import convert_state_dict, resolve_encoder

__all__ = [
    "ARCH_PRESETS",
    "read_checkpoint",
    "infer_arch",
    "expected_arch",
    "check_arch",
    "build_vit",
    "load_encoder_state_dict",
    "load_strict",
    "load_teacher",
]

logger = logging.getLogger(__name__)

# Shapes of the standard ViTs; ``arch='vit_base'`` means these three numbers.
ARCH_PRESETS: dict[str, dict[str, int]] = {
    "vit_tiny": dict(embed_dim=192, depth=12, patch_size=16),
    "vit_small": dict(embed_dim=384, depth=12, patch_size=16),
    "vit_base": dict(embed_dim=768, depth=12, patch_size=16),
    "vit_large": dict(embed_dim=1024, depth=24, patch_size=16),
    "vit_huge": dict(embed_dim=1280, depth=32, patch_size=14),
}
_EXPECTABLE = ("embed_dim", "depth", "patch_size")
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint file safely: safetensors, or torch with ``weights_only=True``.

    The first bytes are checked first, so a text file, an HTML error page or a Git LFS pointer
    is reported as "not a checkpoint" rather than as a refused pickle.

    Raises:
        FileNotFoundError / CheckpointError: naming the file (missing, empty, truncated, not a
            checkpoint, or needing arbitrary unpickling, which is refused).
    """
    path = Path(path)
    head = b""
    if path.is_file():
        with open(path, "rb") as f:
            head = f.read(64)
    is_safetensors = path.suffix == ".safetensors" or (len(head) > 9 and head[8:10] == b'{"')
    if head and not is_safetensors and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        hint = " (a Git LFS pointer: fetch the real file)" if head.startswith(b"version https://git-lfs") else ""
        raise CheckpointError(
            f"checkpoint {path}: not a torch checkpoint{hint}; it starts with {head[:24]!r}, "
            f"neither a zip archive nor a pickle"
        )
    if is_safetensors and path.suffix != ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file: {e}") from None
    try:
        return load_state_dict_file(path)
    except (IndexError, KeyError, TypeError, AttributeError, UnicodeDecodeError, struct.error) as e:
        # the pickle parser can fail in ways comad.io does not translate
        raise CheckpointError(f"checkpoint {path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None


def _shape_name(shape: Mapping[str, Any]) -> str:
    for name, preset in ARCH_PRESETS.items():
        if all(shape.get(k) == v for k, v in preset.items()):
            return f" ({name})"
    return ""


def _describe(shape: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={shape[k]}" for k in _EXPECTABLE if k in shape) + _shape_name(shape)


def infer_arch(sd: Mapping[str, Tensor], source: str = "<file>") -> dict[str, Any]:
    """Architecture of a timm-named ViT encoder state dict, from the tensor shapes.

    Returns:
        dict(img_size, patch_size, in_chans, embed_dim, depth, mlp_ratio, qkv_bias,
        init_values, num_positions).

    Raises:
        CheckpointError: a missing core key, non-square patches or position grid, or missing
            blocks (a gap in the block indices).
    """
    for key in ("patch_embed.proj.weight", "pos_embed", "cls_token"):
        if key not in sd:
            raise CheckpointError(
                f"checkpoint {source}: the encoder has no {key!r} (a CLS-token ViT with a "
                f"linear patch embedding is required); keys seen: {sorted(sd)[:12]}"
            )
    proj = sd["patch_embed.proj.weight"]
    if proj.ndim != 4 or proj.shape[2] != proj.shape[3]:
        raise CheckpointError(f"checkpoint {source}: patch_embed.proj.weight has shape {tuple(proj.shape)}, expected (dim, 3, p, p)")
    embed_dim, in_chans, patch_size = int(proj.shape[0]), int(proj.shape[1]), int(proj.shape[2])
    found = sorted({int(m.group(1)) for k in sd if (m := _BLOCK.match(k))})
    if not found:
        raise CheckpointError(f"checkpoint {source}: the encoder has no transformer blocks (no 'blocks.N.*' keys)")
    missing = sorted(set(range(found[-1] + 1)) - set(found))
    if missing:
        raise CheckpointError(
            f"checkpoint {source}: missing blocks {missing} (the file has blocks "
            f"{found[0]}..{found[-1]} with gaps); the encoder is incomplete"
        )
    fc1 = sd.get("blocks.0.mlp.fc1.weight")
    num_tokens = int(sd["pos_embed"].shape[1])
    num_positions = num_tokens - 1  # one class token
    grid = math.isqrt(max(num_positions, 0))
    if grid * grid != num_positions or grid == 0:
        raise CheckpointError(
            f"checkpoint {source}: pos_embed has {num_tokens} tokens, which is not 1 class token "
            f"plus a square grid of patches"
        )
    return dict(
        img_size=grid * patch_size,
        patch_size=patch_size,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=len(found),
        # without fc1 the strict load below reports the missing key
        mlp_ratio=int(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        init_values=1.0 if "blocks.0.ls1.gamma" in sd else None,  # value comes from the file
        num_positions=num_positions,
    )


def expected_arch(arch: str | Mapping[str, int] | None = None, patch_size: int | None = 16) -> dict[str, int]:
    """The shape expectation: ``arch`` (a preset name or a dict of embed_dim/depth/patch_size)
    over the default patch size (16; ``None`` accepts any patch size)."""
    out: dict[str, int] = {} if patch_size is None else {"patch_size": int(patch_size)}
    if arch is None:
        return out
    if isinstance(arch, str):
        if arch not in ARCH_PRESETS:
            raise ValueError(f"arch {arch!r} is not known; choose one of {list(ARCH_PRESETS)} or give a dict of {_EXPECTABLE}")
        out.update(ARCH_PRESETS[arch])
        return out
    bad = set(arch) - set(_EXPECTABLE)
    if bad:
        raise ValueError(f"arch has unknown keys {sorted(bad)}; allowed: {list(_EXPECTABLE)}")
    out.update({k: int(v) for k, v in arch.items()})
    return out


def check_arch(found: Mapping[str, Any], expected: Mapping[str, int], source: str = "<file>") -> None:
    """Raise a CheckpointError naming the file and both shapes when they disagree."""
    bad = [k for k, v in expected.items() if found.get(k) != v]
    if bad:
        what = "patch size is not " + str(expected["patch_size"]) + "; " if "patch_size" in bad else ""
        raise CheckpointError(
            f"checkpoint {source}: {what}expected {_describe(expected)} but the file holds "
            f"{_describe(found)} (mismatch in {', '.join(bad)})"
        )


def build_vit(arch: Mapping[str, Any], num_heads: int | None = None, img_size: int | None = None) -> torch.nn.Module:
    """A timm ``VisionTransformer`` (class token, final norm, no head) of the given shape.

    ``num_heads`` defaults to embed_dim / 64 (the standard ViT head width).
    """
    from timm.models.vision_transformer import VisionTransformer

    dim = int(arch["embed_dim"])
    if num_heads is None:
        if dim % 64:
            raise ValueError(f"embed_dim {dim} is not a multiple of 64; give num_heads explicitly")
        num_heads = dim // 64
    if dim % num_heads:
        raise ValueError(f"num_heads {num_heads} does not divide embed_dim {dim}")
    return VisionTransformer(
        img_size=img_size or arch["img_size"], patch_size=arch["patch_size"], in_chans=arch.get("in_chans", 3),
        embed_dim=dim, depth=arch["depth"], num_heads=num_heads, mlp_ratio=arch.get("mlp_ratio", 4.0),
        qkv_bias=arch.get("qkv_bias", True), init_values=arch.get("init_values"), num_classes=0,
    )


def load_strict(vit: torch.nn.Module, sd: Mapping[str, Tensor], source: str = "<file>") -> dict[str, list[str]]:
    """Load ``sd`` into ``vit`` and assert that no key is missing or unexpected.

    Returns:
        ``{'missing_keys': [], 'unexpected_keys': []}`` (the record of an exact load).
    """
    try:
        result = vit.load_state_dict(dict(sd), strict=False)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {source}: tensor shapes do not fit the inferred ViT: {e}") from None
    missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {source}: not an exact ViT encoder; missing keys {missing}, "
            f"unexpected keys {unexpected}"
        )
    return {"missing_keys": missing, "unexpected_keys": unexpected}


def load_encoder_state_dict(
    path: str | os.PathLike, *, format: str = "auto", encoder: str | None = None
) -> tuple[str, str, dict[str, Tensor]]:
    """Read a file and convert it: ``(format, encoder, timm_state_dict)``."""
    source = str(path)
    raw = read_checkpoint(path)
    fmt, sd = convert_state_dict(raw, format, encoder, source)
    return fmt, resolve_encoder(fmt, encoder, source), sd


def _resample_pos_embed(sd: dict[str, Tensor], arch: dict[str, Any], img_size: int, source: str) -> dict[str, Tensor]:
    from timm.layers import resample_abs_pos_embed

    p = arch["patch_size"]
    if img_size % p:
        raise ValueError(f"img_size {img_size} is not a multiple of the patch size {p} of {source}")
    old, new = arch["img_size"] // p, img_size // p
    sd = dict(sd)
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"].float(), new_size=[new, new], old_size=[old, old],
                                             num_prefix_tokens=1).to(sd["pos_embed"].dtype)
    return sd


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
        format: ``'auto'`` or one of :data:`comad.teachers.formats.FORMATS`.
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

    source = str(path)
    fmt, enc, sd = load_encoder_state_dict(path, format=format, encoder=encoder)
    found = infer_arch(sd, source)
    check_arch(found, expected_arch(arch, patch_size), source)
    if img_size is not None and img_size != found["img_size"]:
        sd = _resample_pos_embed(sd, found, img_size, source)
    vit = build_vit(found, num_heads=num_heads, img_size=img_size)
    report = load_strict(vit, sd, source)
    info = dict(format=fmt, encoder=enc, source=source, file_arch=found, **report)
    logger.info("teacher %s (%s, encoder %s) from %s: %s; missing keys %s, unexpected keys %s",
                fmt, Path(source).name, enc, source, _describe(found), report["missing_keys"], report["unexpected_keys"])
    return Teacher(vit, name=fmt, source=source, encoder=enc, precision=precision, load_info=info)
