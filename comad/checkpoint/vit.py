"""The ViT family: architecture from tensor shapes and metadata, heads, builder, position grid.

A timm ``VisionTransformer`` encoder (one class token, a linear patch embedding, pre-norm
blocks, final norm). Its width, depth, patch size, MLP ratio and position grid are read from
the tensor shapes (:func:`infer_arch`); the head count cannot be, so it comes from the file's
metadata, an option, a timm model name, or the standard 64-wide heads (:func:`resolve_num_heads`,
which says which one it used).
"""
from __future__ import annotations

import math
import re
from typing import Any, Mapping

import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor

from ..io import CheckpointError

__all__ = ["ARCH_KEYS", "ARCH_FIELDS", "ARCH_PRESETS", "POS_INTERPOLATION", "infer_arch", "stated_arch",
           "read_vit_arch", "resolve_num_heads", "default_num_heads", "expected_arch", "check_arch", "describe_arch",
           "build_vit", "resample_pos_embed"]

#: The architecture fields an exported student's metadata carries (all required there).
ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")
#: Every field :func:`build_vit` takes from an arch dict (the shape fields + ``num_heads``).
ARCH_FIELDS = ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads", "mlp_ratio", "qkv_bias",
               "init_values", "num_positions")
#: Position embeddings are resampled like timm does: bicubic, antialiased when shrinking (unless the
#: layout says its model was trained with a plain bicubic resample: ``Layout.pos_antialias``).
POS_INTERPOLATION = "bicubic"

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


def key_hint(keys: Any) -> str:
    """What a few telltale keys say about a file that is not a plain single-token ViT encoder."""
    keys = set(keys)
    if "dist_token" in keys:
        return " (it has a 'dist_token': a distilled DeiT; only single-token ViTs are supported)"
    if any(k.startswith("fc_norm.") for k in keys) and "norm.weight" not in keys:
        return " (it has 'fc_norm' but no 'norm': a fine-tuned global-pool model, not an encoder)"
    return ""


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
            f"plus a square grid of patches{key_hint(sd)}"
        )
    return dict(
        img_size=grid * patch_size,
        patch_size=patch_size,
        in_chans=in_chans,
        embed_dim=embed_dim,
        depth=len(found),
        # without fc1 the strict load reports the missing key
        mlp_ratio=int(fc1.shape[0]) / embed_dim if fc1 is not None else 4.0,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        init_values=1.0 if "blocks.0.ls1.gamma" in sd else None,  # value comes from the file
        num_positions=num_positions,
    )


def stated_arch(stated: Any, sd: Mapping[str, Tensor], source: str) -> dict[str, int]:
    """The ``arch`` a student's metadata states (all of :data:`ARCH_KEYS`), checked against its
    ``pos_embed``: exactly one CLS slot plus the ``(img_size / patch_size)²`` grid."""
    try:
        arch = {k: int(stated[k]) for k in ARCH_KEYS}
    except (TypeError, KeyError, ValueError):
        raise CheckpointError(
            f"student checkpoint {source}: its metadata has no complete 'arch' (expected keys {', '.join(ARCH_KEYS)}, "
            f"found {stated!r}); export students with comad.export.export_student"
        ) from None
    pos = sd.get("pos_embed")
    grid = arch["img_size"] // arch["patch_size"]
    if pos is not None and (pos.ndim != 3 or pos.shape[1] != 1 + grid * grid):
        extra = pos.shape[1] - grid * grid if pos.ndim == 3 else "?"
        raise CheckpointError(
            f"checkpoint {source}: pos_embed has shape {tuple(pos.shape)}; a student for img_size={arch['img_size']}, "
            f"patch_size={arch['patch_size']} carries 1 CLS slot + {grid}x{grid} positions "
            f"({1 + grid * grid} tokens), found {extra} non-grid tokens"
            + ("" if pos.ndim != 3 or math.isqrt(pos.shape[1]) ** 2 != pos.shape[1] else " (no CLS slot?)")
        )
    return arch


def default_num_heads(embed_dim: int, what: str) -> int:
    """``embed_dim // 64`` (the standard ViT head width); an error naming ``what`` otherwise."""
    if embed_dim % 64:
        raise CheckpointError(f"{what}: cannot infer num_heads for embed_dim {embed_dim}: embed_dim {embed_dim} "
                              f"is not a multiple of 64; give num_heads")
    return embed_dim // 64


def _timm_num_heads(name: str, embed_dim: int, source: str) -> int | None:
    """Heads of the timm ViT called ``name`` (built on the meta device); None for another name."""
    import timm

    if not timm.is_model(name):
        return None
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, num_classes=0)
    if not isinstance(model, VisionTransformer):
        return None
    if int(model.embed_dim) != embed_dim:
        raise CheckpointError(f"checkpoint {source}: the timm model {name!r} is {model.embed_dim} wide, "
                              f"the file's tensors {embed_dim}")
    return int(model.blocks[0].attn.num_heads)


def resolve_num_heads(embed_dim: int, *, given: int | None = None, stated: int | None = None,
                      timm_name: str | None = None, source: str = "<file>") -> tuple[int | None, str]:
    """``(num_heads, how)``: the file's metadata, else ``given`` (an option or config value),
    else the heads of the timm model ``timm_name``, else ``embed_dim // 64``; ``None`` when
    none applies (the builder then asks for num_heads). ``how`` says which one it was.

    Raises:
        CheckpointError: ``given`` disagrees with the metadata, or the heads do not divide the width.
    """
    heads, how = None, f"unknown (embed_dim {embed_dim} is not a multiple of 64)"
    if stated is not None:
        if given is not None and int(given) != int(stated):
            raise CheckpointError(f"checkpoint {source}: num_heads={given} was given, but its metadata 'arch' "
                                  f"says num_heads={stated}")
        heads, how = int(stated), "from metadata"
    elif given is not None:
        heads, how = int(given), "given"
    elif timm_name and (named := _timm_num_heads(timm_name, embed_dim, source)) is not None:
        heads, how = named, f"from the timm model {timm_name!r}"
    elif embed_dim % 64 == 0:
        heads, how = embed_dim // 64, "= embed_dim // 64"
    if heads is not None and (heads <= 0 or embed_dim % heads):
        raise CheckpointError(f"checkpoint {source}: num_heads {heads} ({how}) does not divide embed_dim {embed_dim}")
    return heads, how


def read_vit_arch(sd: Mapping[str, Tensor], source: str, *, stated: Any = None, has_metadata: bool = False,
                  num_heads: int | None = None, timm_name: str | None = None,
                  layout: Any = None) -> tuple[dict[str, Any], str]:
    """``(arch, arch_source)`` of a ViT encoder: the shapes (:func:`infer_arch`) plus ``num_heads``
    (``layout``, the row that read the file, is not needed: the tensors say it all).

    With ``has_metadata`` (a layout that keeps its own ``arch``), the stated arch must be complete
    and agree with the tensors; ``arch_source`` is then ``'metadata'``, else ``'shapes (num_heads
    ...)'`` naming where the head count came from.
    """
    declared = stated_arch(stated, sd, source) if has_metadata else None
    arch = infer_arch(sd, source)
    if declared is not None:
        bad = [k for k in ARCH_KEYS if k in arch and arch[k] != declared[k]]
        if bad:
            raise CheckpointError(
                f"checkpoint {source}: its metadata 'arch' states {describe_arch(declared, bad)} but the tensors hold "
                f"{describe_arch(arch, bad)}"
            )
    arch["num_heads"], how = resolve_num_heads(arch["embed_dim"], given=num_heads, timm_name=timm_name, source=source,
                                               stated=declared["num_heads"] if declared else None)
    return arch, "metadata" if declared is not None else f"shapes (num_heads {how})"


def _shape_name(shape: Mapping[str, Any]) -> str:
    for name, preset in ARCH_PRESETS.items():
        if all(shape.get(k) == v for k, v in preset.items()):
            return f" ({name})"
    return ""


def describe_arch(shape: Mapping[str, Any], keys: tuple[str, ...] | list[str] = _EXPECTABLE) -> str:
    """``embed_dim=768, depth=12, patch_size=16 (vit_base)`` for messages."""
    return ", ".join(f"{k}={shape[k]}" for k in keys if k in shape) + _shape_name(shape)


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
            f"checkpoint {source}: {what}expected {describe_arch(expected)} but the file holds "
            f"{describe_arch(found)} (mismatch in {', '.join(bad)})"
        )


def build_vit(arch: str | Mapping[str, Any], *, num_heads: int | None = None, img_size: int | None = None,
              num_classes: int = 0, global_pool: str = "token", drop_path_rate: float = 0.0,
              what: str = "arch") -> VisionTransformer:
    """A timm ``VisionTransformer`` (class token, final norm; no head unless ``num_classes``).

    Args:
        arch: a timm model name (``vit_tiny_patch16_224``) or a dict of :data:`ARCH_FIELDS`
            (missing ones take timm's defaults; ``num_positions`` is implied by img_size).
        num_heads: overrides ``arch['num_heads']``; default embed_dim / 64 (the standard head width).
        img_size: input size (default: the architecture's).
        num_classes, global_pool, drop_path_rate: as timm's (``'avg'``: mean of the patch
            tokens through a fresh ``fc_norm``, the MAE fine-tune head).
        what: how messages name ``arch`` (``'student arch'`` for the distillation config).
    """
    kw: dict[str, Any] = dict(num_classes=num_classes, global_pool=global_pool, drop_path_rate=drop_path_rate)
    if img_size is not None:
        kw["img_size"] = img_size
    if isinstance(arch, str):
        import timm

        model = timm.create_model(arch, pretrained=False, **kw)
        if not isinstance(model, VisionTransformer):
            raise ValueError(f"{what} {arch!r} is not a timm VisionTransformer")
        return model
    unknown = set(arch) - set(ARCH_FIELDS)
    if unknown:
        raise ValueError(f"{what}: unknown keys {sorted(unknown)}; expected some of {', '.join(ARCH_FIELDS)}")
    a = {k: v for k, v in arch.items() if k != "num_positions"}  # implied by img_size / patch_size
    dim = int(a.pop("embed_dim", 768))
    stated = a.pop("num_heads", None)
    heads = int(num_heads if num_heads is not None else stated if stated is not None else default_num_heads(dim, what))
    if dim % heads:
        raise ValueError(f"{what}: num_heads {heads} does not divide embed_dim {dim}")
    size = a.pop("img_size", 224)
    kw.setdefault("img_size", size)
    return VisionTransformer(embed_dim=dim, num_heads=heads, **a, **kw)


def _pair(v: int | tuple[int, int] | list[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def resample_pos_embed(pos_embed: Tensor, new_grid: int | tuple[int, int],
                       old_grid: int | tuple[int, int] | None = None, num_prefix_tokens: int = 1,
                       antialias: bool = True) -> Tensor:
    """Resample a position embedding to another patch grid, as timm does.

    Args:
        pos_embed: (1, P + h*w, D): ``P`` prefix tokens (the class token) then the h x w grid.
        new_grid: (H, W) or H for a square grid.
        old_grid: (h, w) of ``pos_embed`` (default: the square grid its token count gives).
        num_prefix_tokens: ``P``; these slots are kept as they are.
        antialias: antialias when shrinking (timm's default). ``False`` is the plain bicubic
            resample DINOv2 trained with (its layout row says so: ``Layout.pos_antialias``);
            at 37x37 -> 16x16 the two differ by up to 1.0 in DINOv2-S's last-block features.

    Returns:
        (1, P + H*W, D) in ``pos_embed``'s dtype: timm's ``resample_abs_pos_embed`` (bicubic,
        computed in float32); differentiable, so a forward can use it.

    Raises:
        ValueError: the token count does not fit ``old_grid``.
    """
    n = int(pos_embed.shape[1]) - num_prefix_tokens
    old = _pair(old_grid) if old_grid is not None else (math.isqrt(max(n, 0)),) * 2
    if pos_embed.ndim != 3 or old[0] * old[1] != n:
        raise ValueError(f"pos_embed of shape {tuple(pos_embed.shape)} is not {num_prefix_tokens} prefix token(s) "
                         f"plus a {old[0]}x{old[1]} grid")
    return resample_abs_pos_embed(pos_embed, new_size=list(_pair(new_grid)), old_size=list(old),
                                  num_prefix_tokens=num_prefix_tokens, interpolation=POS_INTERPOLATION,
                                  antialias=bool(antialias))
