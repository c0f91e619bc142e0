"""Teacher checkpoints in the exact official layouts, with random (seeded) weights.

Tests and the distillation demo write small teachers with :func:`write_checkpoint` (e.g.
``embed_dim=64, depth=2, img_size=64``); the files carry the same containers, prefixes and
non-encoder parts (MoCo v3 BN-MLP projector and predictor, momentum encoder with different
weights, optimizer state with tensors; iBOT heads, ``args`` Namespace, ``masked_embed`` in the
student) as the released ones, only smaller. :func:`write_dinov2_checkpoint` and
:func:`write_cnn_checkpoint` write the real teachers' layouts (the converted DINOv2, the CNN
files), also with the library's own random init (``init='library'``: the random-weight control
teachers of the evidence run).
"""
from __future__ import annotations

import argparse
import inspect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..io import atomic_save_safetensors, atomic_torch_save
from ..checkpoint import ARCH_PRESETS, LAYOUTS, build_cnn, build_vit, get_layout
from ..checkpoint.cnn import cnn_net, lukemelas_to_timm, timm_to_lukemelas

__all__ = ["SYNTHETIC_FORMATS", "CNN_FORMATS", "INITS", "random_encoder", "linear_image_encoder", "write_checkpoint",
           "random_cnn_state_dict", "write_cnn_checkpoint", "write_dinov2_checkpoint"]

SYNTHETIC_FORMATS = ("mae", "mocov3", "mocov3_deit", "ibot", "ibot_teacher", "timm")


def _arch_name(embed_dim: int, depth: int, patch_size: int, prefix: str = "vit_") -> str:
    for name, p in ARCH_PRESETS.items():
        if (p["embed_dim"], p["depth"], p["patch_size"]) == (embed_dim, depth, patch_size):
            return prefix + name[len("vit_"):]
    return prefix + "custom"


def random_encoder(embed_dim: int, depth: int, num_heads: int | None, patch_size: int, img_size: int,
                   generator: torch.Generator) -> dict[str, Tensor]:
    """A timm ViT encoder state dict (no head) with every tensor random (norms and biases too)."""
    from timm.models.vision_transformer import VisionTransformer

    heads = num_heads or 1  # shapes do not depend on the head count
    vit = VisionTransformer(img_size=img_size, patch_size=patch_size, embed_dim=embed_dim, depth=depth,
                            num_heads=heads, num_classes=0, weight_init="skip")
    sd = {}
    for k, v in vit.state_dict().items():
        noise = torch.randn(v.shape, generator=generator)
        if k.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            sd[k] = 1.0 + 0.1 * noise
        elif v.ndim >= 2 and k.endswith("weight"):
            sd[k] = noise / v[0].numel() ** 0.5  # fan-in scaled
        else:
            sd[k] = 0.02 * noise
    return sd


#: The axis of each timm ViT tensor that runs along the residual stream (the token width), by key
#: suffix; tensors not listed (qkv.bias, fc1.bias) live in a block's inner space.
_RESIDUAL_AXIS = {"cls_token": -1, "reg_token": -1, "pos_embed": -1, "patch_embed.proj.weight": 0,
                  "patch_embed.proj.bias": 0, "norm1.weight": 0, "norm1.bias": 0, "norm2.weight": 0,
                  "norm2.bias": 0, "norm.weight": 0, "norm.bias": 0, "attn.proj.weight": 0, "attn.proj.bias": 0,
                  "mlp.fc2.weight": 0, "mlp.fc2.bias": 0, "ls1.gamma": 0, "ls2.gamma": 0, "attn.qkv.weight": 1,
                  "mlp.fc1.weight": 1}
_INNER = ("attn.qkv.bias", "mlp.fc1.bias")


def linear_image_encoder(sd: dict[str, Tensor], generator: torch.Generator, noise: float = 0.0,
                         scale_range: float = 2.0) -> tuple[dict[str, Tensor], Tensor, Tensor]:
    """A ViT encoder whose output tokens are ``scale * out[perm]`` of ``sd``'s (then ``noise``).

    The residual stream is permuted everywhere (LayerNorm commutes with a permutation) and the
    final norm's affine is rescaled by random factors in ``[1/scale_range, scale_range]`` with
    random signs, so that the new encoder's tokens are an invertible linear image (a scaled
    permutation) of the old ones, exactly. ``noise`` then adds ``noise * std`` of each tensor
    as Gaussian noise (the two are related up to a linear map plus a perturbation).

    Returns:
        (state dict, perm (D,), scale (D,)): with ``noise=0``, ``new(x) == old(x)[..., perm] * scale``
        (plus the rescaled bias).
    """
    dim = sd["cls_token"].shape[-1]
    perm = torch.randperm(dim, generator=generator)
    scale = torch.exp((torch.rand(dim, generator=generator) * 2 - 1) * torch.log(torch.tensor(scale_range)))
    scale = scale * torch.where(torch.rand(dim, generator=generator) < 0.5, -1.0, 1.0)
    out = {}
    for k, v in sd.items():
        axis = next((a for suffix, a in _RESIDUAL_AXIS.items() if k == suffix or k.endswith("." + suffix)), None)
        if axis is None and not k.endswith(_INNER):
            raise ValueError(f"linear_image_encoder: no rule for the ViT tensor {k!r}")
        w = v if axis is None else v.index_select(axis, perm)
        if k in ("norm.weight", "norm.bias"):
            w = w * scale
        if noise:
            w = w + noise * v.float().std() * torch.randn(w.shape, generator=generator)
        out[k] = w
    return out, perm, scale


def _perturb(sd: dict[str, Tensor], generator: torch.Generator, scale: float = 0.01) -> dict[str, Tensor]:
    return {k: v + scale * torch.randn(v.shape, generator=generator) for k, v in sd.items()}


def _bn_mlp(prefix: str, dims: list[int], generator: torch.Generator) -> dict[str, Tensor]:
    """MoCo v3 ``_build_mlp`` keys: Linear(bias=False), BN, ReLU, ..., Linear, BN(affine=False)."""
    out: dict[str, Tensor] = {}
    idx = 0
    n = len(dims) - 1
    for layer in range(n):
        out[f"{prefix}{idx}.weight"] = torch.randn(dims[layer + 1], dims[layer], generator=generator) / dims[layer] ** 0.5
        bn = f"{prefix}{idx + 1}."
        if layer < n - 1:
            out[bn + "weight"] = 1.0 + 0.1 * torch.randn(dims[layer + 1], generator=generator)
            out[bn + "bias"] = 0.1 * torch.randn(dims[layer + 1], generator=generator)
        out[bn + "running_mean"] = 0.1 * torch.randn(dims[layer + 1], generator=generator)
        out[bn + "running_var"] = 1.0 + torch.rand(dims[layer + 1], generator=generator)
        out[bn + "num_batches_tracked"] = torch.tensor(1000, dtype=torch.long)
        idx += 3 if layer < n - 1 else 2
    return out


def _adamw_state(params: dict[str, Tensor], generator: torch.Generator, lr: float, betas: tuple[float, float],
                 weight_decay: float) -> dict[str, Any]:
    """A real ``torch.optim.AdamW`` state dict after one step over ``params``."""
    leaves = [nn.Parameter(v.clone().float()) for v in params.values() if v.is_floating_point()]
    opt = torch.optim.AdamW(leaves, lr=lr, betas=betas, weight_decay=weight_decay)
    for p in leaves:
        p.grad = torch.randn(p.shape, generator=generator)
    opt.step()
    return opt.state_dict()


def _conv_stem(embed_dim: int, generator: torch.Generator) -> dict[str, Tensor]:
    """MoCo v3 ``ConvStem`` keys: 4 x (conv3x3, BN, ReLU) then a 1x1 conv (``vit_conv_*``)."""
    out: dict[str, Tensor] = {}
    c_in, c_out = 3, embed_dim // 8
    for i in range(4):
        out[f"patch_embed.proj.{3 * i}.weight"] = 0.1 * torch.randn(c_out, c_in, 3, 3, generator=generator)
        for name, t in (("weight", torch.ones(c_out)), ("bias", torch.zeros(c_out)), ("running_mean", torch.zeros(c_out)),
                        ("running_var", torch.ones(c_out)), ("num_batches_tracked", torch.tensor(0))):
            out[f"patch_embed.proj.{3 * i + 1}.{name}"] = t
        c_in, c_out = c_out, c_out * 2
    out["patch_embed.proj.12.weight"] = 0.1 * torch.randn(embed_dim, c_in, 1, 1, generator=generator)
    out["patch_embed.proj.12.bias"] = torch.zeros(embed_dim)
    return out


@dataclass(frozen=True)
class _Ctx:
    """What every format writer gets: the encoder's shape, its seeded generator, the arch name."""

    g: torch.Generator
    embed_dim: int
    depth: int
    patch_size: int
    img_size: int
    seed: int
    arch_name: str


def _mae(enc: dict[str, Tensor], c: _Ctx, decoder: bool = False) -> tuple[Any, dict[str, Tensor]]:
    """``{'model': encoder}``; ``decoder`` adds ``mask_token`` + ``decoder_*`` as in the full pre-training file."""
    model = dict(enc)
    if decoder:
        dd, g = max(16, c.embed_dim // 2), c.g
        model["mask_token"] = 0.02 * torch.randn(1, 1, dd, generator=g)
        model["decoder_embed.weight"] = torch.randn(dd, c.embed_dim, generator=g) / c.embed_dim ** 0.5
        model["decoder_embed.bias"] = torch.zeros(dd)
        model["decoder_pos_embed"] = torch.randn(1, (c.img_size // c.patch_size) ** 2 + 1, dd, generator=g)
        model["decoder_blocks.0.norm1.weight"] = torch.ones(dd)
        model["decoder_norm.weight"] = torch.ones(dd)
        model["decoder_pred.weight"] = torch.randn(c.patch_size ** 2 * 3, dd, generator=g)
    return {"model": model}, enc


def _mocov3_deit(enc: dict[str, Tensor], c: _Ctx) -> tuple[Any, dict[str, Tensor]]:
    """``convert_to_deit.py`` output: ``{'model': encoder}``."""
    return {"model": dict(enc)}, enc


def _timm(enc: dict[str, Tensor], c: _Ctx, num_classes: int = 10) -> tuple[Any, dict[str, Tensor]]:
    """A plain timm state dict with a classifier ``head`` of ``num_classes`` (0: none)."""
    sd = dict(enc)
    if num_classes:
        sd["head.weight"] = torch.randn(int(num_classes), c.embed_dim, generator=c.g) / c.embed_dim ** 0.5
        sd["head.bias"] = torch.zeros(int(num_classes))
    return sd, enc


def _ibot_teacher(enc: dict[str, Tensor], c: _Ctx) -> tuple[Any, dict[str, Tensor]]:
    """``checkpoint_teacher.pth``: ``{'state_dict': backbone}``."""
    return {"state_dict": enc}, enc


def _mocov3(enc: dict[str, Tensor], c: _Ctx, mlp_dim: int | None = None, out_dim: int | None = None,
            arch: str | None = None, conv_stem: bool = False, return_encoder: str = "base") -> tuple[Any, dict[str, Tensor]]:
    """``vit-b-300ep.pth.tar``: base + momentum encoders with BN-MLP heads, predictor, AdamW state."""
    g, d = c.g, c.embed_dim
    mlp_dim, out_dim = int(mlp_dim or 2 * d), int(out_dim or max(8, d // 2))
    base, arch_name = dict(enc), c.arch_name
    if conv_stem:
        del base["patch_embed.proj.weight"], base["patch_embed.proj.bias"]
        base.update(_conv_stem(d, g))
        arch_name = _arch_name(d, c.depth, c.patch_size, prefix="vit_conv_")
    base_full = {**base, **_bn_mlp("head.", [d, mlp_dim, mlp_dim, out_dim], g)}
    momentum_full = _perturb(base_full, g)  # the EMA encoder: same shapes, different weights
    momentum_full.update({k: v for k, v in base_full.items() if k.endswith("num_batches_tracked")})
    state = {f"module.base_encoder.{k}": v for k, v in base_full.items()}
    state.update({f"module.momentum_encoder.{k}": v for k, v in momentum_full.items()})
    state.update({f"module.predictor.{k}": v for k, v in _bn_mlp("", [out_dim, mlp_dim, out_dim], g).items()})
    trainable = {k: v for k, v in state.items() if not k.startswith("module.momentum_encoder.")
                 and "running_" not in k and "num_batches" not in k}
    ckpt = {"epoch": 300, "arch": arch or arch_name, "state_dict": state,
            "optimizer": _adamw_state(trainable, g, lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.1)}
    chosen = base if return_encoder == "base" else {k: v for k, v in momentum_full.items() if not k.startswith("head.")}
    return ckpt, chosen


def _ibot_head(c: _Ctx, out_dim: int, patch_out_dim: int, shared: bool) -> dict[str, Tensor]:
    g, d = c.g, c.embed_dim
    hidden, bottleneck = 2 * d, max(8, d // 2)
    h: dict[str, Tensor] = {}
    for i, (o, i_) in zip((0, 2, 4), ((hidden, d), (hidden, hidden), (bottleneck, hidden))):
        h[f"mlp.{i}.weight"] = torch.randn(o, i_, generator=g) / i_ ** 0.5
        h[f"mlp.{i}.bias"] = torch.zeros(o)
    h["last_layer.weight_g"] = torch.ones(out_dim, 1)
    h["last_layer.weight_v"] = torch.randn(out_dim, bottleneck, generator=g)
    h["last_layer2.weight_g"] = h["last_layer.weight_g"] if shared else torch.ones(patch_out_dim, 1)
    h["last_layer2.weight_v"] = h["last_layer.weight_v"] if shared else torch.randn(patch_out_dim, bottleneck, generator=g)
    return h


def _ibot_args(c: _Ctx, out_dim: int, patch_out_dim: int) -> argparse.Namespace:
    return argparse.Namespace(
        arch=c.arch_name, patch_size=c.patch_size, out_dim=out_dim, patch_out_dim=patch_out_dim, shared_head=False,
        shared_head_teacher=True, norm_last_layer=True, momentum_teacher=0.996, use_masked_im_modeling=True,
        pred_ratio=[0.0, 0.3], pred_ratio_var=[0.0, 0.2], pred_shape="block", lambda1=1.0, lambda2=1.0,
        global_crops_number=2, local_crops_number=10, global_crops_scale=(0.14, 1.0), epochs=800, lr=5e-4,
        batch_size_per_gpu=64, output_dir="/tmp/ibot", seed=c.seed, dist_url="env://",
    )


def _ibot(enc: dict[str, Tensor], c: _Ctx, out_dim: int | None = None, patch_out_dim: int | None = None,
          return_encoder: str = "teacher") -> tuple[Any, dict[str, Tensor]]:
    """Full iBOT ``checkpoint.pth``: teacher and student backbones + heads, optimizer, args, loss centres."""
    g = c.g
    out_dim, patch_out_dim = int(out_dim or 4 * c.embed_dim), int(patch_out_dim or 4 * c.embed_dim)
    student_bb = _perturb(enc, g)
    student_bb["masked_embed"] = 0.02 * torch.randn(1, c.embed_dim, generator=g)
    teacher_sd = {f"backbone.{k}": v for k, v in enc.items()}
    teacher_sd.update({f"head.{k}": v for k, v in _ibot_head(c, out_dim, patch_out_dim, shared=True).items()})
    student_sd = {f"module.backbone.{k}": v for k, v in student_bb.items()}
    student_sd.update({f"module.head.{k}": v for k, v in _ibot_head(c, out_dim, patch_out_dim, shared=False).items()})
    ckpt = {
        "student": student_sd, "teacher": teacher_sd,
        "optimizer": _adamw_state({k: v for k, v in student_sd.items() if "weight_g" not in k}, g, lr=5e-4,
                                  betas=(0.9, 0.999), weight_decay=0.04),
        "epoch": 800, "args": _ibot_args(c, out_dim, patch_out_dim),
        "ibot_loss": {"center": torch.randn(1, out_dim, generator=g),
                      "center2": torch.randn(1, 1, patch_out_dim, generator=g)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "backoff_factor": 0.5, "growth_interval": 2000,
                        "_growth_tracker": 0},
    }
    chosen = dict(enc) if return_encoder == "teacher" else {k: v for k, v in student_bb.items() if k != "masked_embed"}
    return ckpt, chosen


#: format -> writer ``(encoder, ctx, **options) -> (file object, the encoder the loader should give)``;
#: a writer's keyword arguments are that format's options.
_WRITERS: dict[str, Callable[..., tuple[Any, dict[str, Tensor]]]] = {
    "mae": _mae, "mocov3": _mocov3, "mocov3_deit": _mocov3_deit, "ibot": _ibot, "ibot_teacher": _ibot_teacher,
    "timm": _timm,
}


def write_checkpoint(
    fmt: str,
    path: str | os.PathLike,
    *,
    embed_dim: int = 768,
    depth: int = 12,
    num_heads: int | None = None,
    patch_size: int = 16,
    img_size: int = 224,
    seed: int = 0,
    encoder: dict[str, Tensor] | None = None,
    **fmt_opts: Any,
) -> dict[str, Tensor]:
    """Write a teacher checkpoint in the official layout ``fmt`` with random weights.

    Args:
        fmt: ``mae`` | ``mocov3`` | ``mocov3_deit`` | ``ibot`` | ``ibot_teacher`` | ``timm``.
        path: output file (written atomically; ``timm`` to a ``.safetensors`` path writes safetensors).
        embed_dim, depth, num_heads, patch_size, img_size: encoder shape.
        seed: the weights are a function of the seed only.
        encoder: the (timm-named) encoder to store instead of a random one (e.g. from
            :func:`linear_image_encoder`); the other parts of the file stay random (seeded).
        fmt_opts: the options of the format's writer (:data:`_WRITERS`) —
            mae: ``decoder`` (bool); mocov3: ``mlp_dim``, ``out_dim``, ``arch`` (the stored arch
            string), ``conv_stem`` (bool: a ``vit_conv_*`` ConvStem encoder), ``return_encoder``
            (``base`` | ``momentum``); ibot: ``out_dim``, ``patch_out_dim``, ``return_encoder``
            (``teacher`` | ``student``); timm: ``num_classes`` (a classifier head to drop; 10).

    Returns:
        The timm-named encoder state dict stored in the file (the default encoder, or
        ``return_encoder``), i.e. what the loader should produce.
    """
    if fmt not in SYNTHETIC_FORMATS:
        raise ValueError(f"fmt {fmt!r} is not one of {SYNTHETIC_FORMATS}")
    writer = _WRITERS[fmt]
    allowed = [n for n in inspect.signature(writer).parameters if n not in ("enc", "c")]
    bad = set(fmt_opts) - set(allowed)
    if bad:
        raise TypeError(f"write_checkpoint({fmt!r}): unknown options {sorted(bad)}; allowed {allowed}")
    g = torch.Generator().manual_seed(seed)
    enc = random_encoder(embed_dim, depth, num_heads, patch_size, img_size, g)
    if encoder is not None:
        if encoder.keys() != enc.keys() or any(encoder[k].shape != enc[k].shape for k in enc):
            raise ValueError(f"write_checkpoint: the given encoder does not have the shapes of a ViT with "
                             f"embed_dim={embed_dim}, depth={depth}, patch_size={patch_size}, img_size={img_size}")
        enc = dict(encoder)
    ctx = _Ctx(g, embed_dim, depth, patch_size, img_size, seed, _arch_name(embed_dim, depth, patch_size))
    obj, chosen = writer(enc, ctx, **fmt_opts)
    path = Path(path)
    if fmt == "timm" and path.suffix == ".safetensors":
        atomic_save_safetensors(obj, path)
    else:
        atomic_torch_save(obj, path)
    return chosen


#: The CNN layouts of the loader's table, and the two random inits of the real-teacher writers.
CNN_FORMATS: tuple[str, ...] = tuple(lay.name for lay in LAYOUTS if lay.family == "cnn")
INITS = ("scaled", "library")
_TO_FILE_NAMES = {lukemelas_to_timm: timm_to_lukemelas}  # a layout's convert -> its inverse


def _check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init {init!r}: expected one of {INITS}")


def random_cnn_state_dict(fmt: str, seed: int = 0, init: str = "scaled") -> dict[str, Tensor]:
    """A state dict in the released CNN layout ``fmt`` with random (seeded) weights.

    Args:
        init: ``'scaled'``: every tensor random: convolution and linear weights fan-in scaled;
            BatchNorm weights 1 + 0.1·n, biases and running means 0.1·n, running variances
            1 + 0.1·|n| (so that eval-mode BN is not the identity: the tests see every tensor
            used); ``'library'``: the network as torchvision / timm initialise it.
    """
    _check_init(init)
    layout = get_layout(fmt)
    if layout.family != "cnn":
        raise ValueError(f"random_cnn_state_dict: {fmt!r} is not a CNN layout; choose one of {CNN_FORMATS}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_cnn(cnn_net(layout))
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if init == "library" or not v.is_floating_point():
            sd[k] = v.clone()
            continue
        n = torch.randn(v.shape, generator=g)
        if v.ndim >= 2:
            sd[k] = n / v[0].numel() ** 0.5
        elif k.endswith("running_var"):
            sd[k] = 1.0 + 0.1 * n.abs()
        elif k.endswith("weight"):
            sd[k] = 1.0 + 0.1 * n
        else:
            sd[k] = 0.1 * n
    inverse = _TO_FILE_NAMES.get(layout.convert) if layout.convert is not None else None
    return sd if inverse is None else inverse(sd, layout, f"synthetic {fmt}")


def write_cnn_checkpoint(fmt: str, path: str | os.PathLike, seed: int = 0, init: str = "scaled") -> dict[str, Tensor]:
    """Write :func:`random_cnn_state_dict` to ``path`` (atomically, a torch file like the release) and return it."""
    sd = random_cnn_state_dict(fmt, seed, init)
    atomic_torch_save(sd, path)
    return sd


def write_dinov2_checkpoint(path: str | os.PathLike, *, embed_dim: int = 384, depth: int = 12, num_heads: int = 6,
                            patch_size: int = 14, img_size: int = 518, seed: int = 0, init: str = "library",
                            source: str | None = None) -> dict[str, Tensor]:
    """Write a random ViT with layer scale in the ``dinov2`` layout (a safetensors file with header
    ``format=dinov2``, what ``tools/convert_teacher.py`` writes for a DINOv2 export) and return it.

    Args:
        embed_dim, depth, num_heads, patch_size, img_size: the ViT (default: DINOv2 ViT-S/14 at 518 px).
        init: ``'library'``: timm's init of DINOv2's ViT (layer scale 1e-5, as ``vit_small_patch14_dinov2``);
            ``'scaled'``: every tensor random (:func:`random_encoder`, layer scale 1 + noise).
        source: recorded in the header (default: the init and seed).
    """
    _check_init(init)
    arch = dict(embed_dim=embed_dim, depth=depth, num_heads=num_heads, patch_size=patch_size, img_size=img_size,
                init_values=1e-5)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        sd = {k: v.clone() for k, v in build_vit(arch).state_dict().items()}
    if init == "scaled":
        enc = random_encoder(embed_dim, depth, num_heads, patch_size, img_size, torch.Generator().manual_seed(seed))
        g = torch.Generator().manual_seed(seed + 1)
        sd = {**enc, **{k: 1.0 + 0.1 * torch.randn(v.shape, generator=g) for k, v in sd.items() if k.endswith(".gamma")}}
    from .onnx_vit import write_dinov2_file

    write_dinov2_file(sd, path, source=source or f"random init ({init}, seed {seed})")
    return sd
