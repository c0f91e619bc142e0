"""The CNN family: torchvision / timm convolutional networks read at a stride-16 feature map.

A CNN layout row of :data:`~comad.checkpoint.layouts.LAYOUTS` (``family='cnn'``) names its
network with a :class:`CnnNet` (which library builds it, which modules run in order, the
stride-16 blocks it can be read at, the input normalisation its weights were trained with) and,
where the file's key names are not the network's, a ``convert`` that renames them. The network
is always built with torchvision or timm, never a weights package's own model code, and loaded
whole (classifier included) with the exact missing / unexpected key lists checked.

Layouts (rows of the table):

- ``torchvision_mobilenet_v2``: torchvision's ImageNet MobileNetV2 (``mobilenet_v2-b0353104.pth``):
  ``features.N.*`` + ``classifier.1.*``, read at ``features.11``-``features.13`` (96 channels).
- ``efficientnet_lite0``: EfficientNet-Lite0 ImageNet weights in the EfficientNet-PyTorch
  (lukemelas) naming: ``_conv_stem``, ``_bn0``, a flat ``_blocks.N`` list, ``_conv_head``,
  ``_bn1``, ``_fc``. It is timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3;
  ``efficientnet_lite0`` has symmetric padding and gives other outputs); the flat block index maps
  to timm's (stage, block) by the stage depths of the network, each block's convs and norms by
  :data:`LUKEMELAS_TOP`, :data:`LUKEMELAS_DS` and :data:`LUKEMELAS_IR`. Read at
  ``blocks.4.0``-``blocks.4.2`` (112 channels). Its weights expect inputs in [-1, 1]
  (mean = std = 0.5, timm's setting for this model; the stem's BatchNorm statistics agree).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from ..io import CheckpointError
from .strict import load_strict

# ``layout`` arguments are rows of comad.checkpoint.layouts (Layout) and ``ckpt`` an EncoderCheckpoint
# of comad.checkpoint.load; both modules import this one, so the types are not imported here.

__all__ = ["CNN_STRIDE", "CnnNet", "LUKEMELAS_TOP", "LUKEMELAS_DS", "LUKEMELAS_IR", "build_cnn", "cnn_net",
           "lukemelas_to_timm", "timm_to_lukemelas", "read_cnn_arch", "load_cnn", "IMAGENET_MEAN", "IMAGENET_STD"]

#: The feature map's stride: one token per 16x16 patch.
CNN_STRIDE = 16
IMAGENET_MEAN: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_MEAN)  # type: ignore[assignment]
IMAGENET_STD: tuple[float, float, float] = tuple(IMAGENET_DEFAULT_STD)  # type: ignore[assignment]


@dataclass(frozen=True)
class CnnNet:
    """The network of a CNN layout.

    Attributes:
        library, arch: ``torchvision.models.get_model(arch)`` or ``timm.create_model(arch)`` (with
            its classifier, so that the whole file loads).
        body: module paths the teacher runs in order (``.*`` expands to the children).
        taps: the readable stride-16 blocks, in order (``layers=-1`` is the last), all one width.
        mean, std: per-channel input normalisation the weights were trained with (0-1 scale).
        stride: the taps' stride (16: one token per 16x16 patch).
    """

    library: str
    arch: str
    body: tuple[str, ...]
    taps: tuple[str, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    stride: int = CNN_STRIDE


#: EfficientNet-PyTorch names -> timm names: the stem and head ...
LUKEMELAS_TOP: tuple[tuple[str, str], ...] = (
    ("_conv_stem.", "conv_stem."), ("_bn0.", "bn1."), ("_conv_head.", "conv_head."), ("_bn1.", "bn2."), ("_fc.", "classifier."),
)
#: ... a block without expansion (timm ``DepthwiseSeparableConv``) ...
LUKEMELAS_DS: tuple[tuple[str, str], ...] = (
    ("_depthwise_conv.", "conv_dw."), ("_bn1.", "bn1."), ("_project_conv.", "conv_pw."), ("_bn2.", "bn2."),
)
#: ... and an inverted-residual block (timm ``InvertedResidual``).
LUKEMELAS_IR: tuple[tuple[str, str], ...] = (
    ("_expand_conv.", "conv_pw."), ("_bn0.", "bn1."), ("_depthwise_conv.", "conv_dw."), ("_bn1.", "bn2."),
    ("_project_conv.", "conv_pwl."), ("_bn2.", "bn3."),
)
_FLAT = re.compile(r"^_blocks\.(\d+)\.(.+)$")
_STAGED = re.compile(r"^blocks\.(\d+)\.(\d+)\.(.+)$")


def build_cnn(net: CnnNet, meta: bool = False) -> nn.Module:
    """The network with the library's random init and its 1000-class classifier (``meta``: no storage)."""
    if net.library not in ("torchvision", "timm"):
        raise ValueError(f"CNN network {net.arch}: unknown library {net.library!r} (torchvision or timm)")
    with torch.device("meta") if meta else torch.device("cpu"):
        if net.library == "torchvision":
            import torchvision

            return torchvision.models.get_model(net.arch, weights=None)
        import timm

        return timm.create_model(net.arch, pretrained=False)


def cnn_net(layout: Any) -> CnnNet:
    """The :class:`CnnNet` of a ``family='cnn'`` layout row."""
    if not isinstance(layout.network, CnnNet):
        raise ValueError(f"layout {layout.name}: family {layout.family!r} rows need network=CnnNet(...)")
    return layout.network


def _swap(name: str, pairs: tuple[tuple[str, str], ...], reverse: bool = False) -> str | None:
    for a, b in pairs:
        a, b = (b, a) if reverse else (a, b)
        if name.startswith(a):
            return b + name[len(a):]
    return None


def _stage_blocks(net: CnnNet) -> list[tuple[int, int]]:
    """timm EfficientNet (stage, block) of each flat block index (from the network built on the meta device)."""
    model = build_cnn(net, meta=True)
    return [(s, r) for s, stage in enumerate(model.blocks) for r in range(len(stage))]


def lukemelas_to_timm(sd: Mapping[str, Tensor], layout: Any, source: str) -> dict[str, Tensor]:
    """EfficientNet-PyTorch keys (flat ``_blocks.N``) -> timm EfficientNet keys (``blocks.S.R``)."""
    staged, out, unknown = _stage_blocks(cnn_net(layout)), {}, []
    found = sorted({int(m.group(1)) for k in sd if (m := _FLAT.match(k))})
    if found and found[-1] >= len(staged):
        raise CheckpointError(f"checkpoint {source}: the file has {found[-1] + 1} blocks, {len(staged)} fit the "
                              f"{cnn_net(layout).arch} built for it (a wider/deeper EfficientNet variant?)")
    for key, value in sd.items():
        m = _FLAT.match(key)
        if m:
            i = int(m.group(1))
            table = LUKEMELAS_IR if f"_blocks.{i}._expand_conv.weight" in sd else LUKEMELAS_DS
            rest = _swap(m.group(2), table)
            name = None if rest is None else "blocks.{}.{}.{}".format(*staged[i], rest)
        else:
            name = _swap(key, LUKEMELAS_TOP)
        if name is None:
            unknown.append(key)
        else:
            out[name] = value
    if unknown:
        raise CheckpointError(f"checkpoint {source}: keys no EfficientNet-PyTorch -> timm rule covers: {sorted(unknown)[:12]}")
    return out


def timm_to_lukemelas(sd: Mapping[str, Tensor], layout: Any, source: str = "<model>") -> dict[str, Tensor]:
    """The inverse of :func:`lukemelas_to_timm` (to write files in the released layout)."""
    flat = {sr: i for i, sr in enumerate(_stage_blocks(cnn_net(layout)))}
    out = {}
    for key, value in sd.items():
        m = _STAGED.match(key)
        if m:
            s, r = int(m.group(1)), int(m.group(2))
            table = LUKEMELAS_IR if f"blocks.{s}.{r}.conv_pwl.weight" in sd else LUKEMELAS_DS
            rest = _swap(m.group(3), table, reverse=True)
            name = None if rest is None else f"_blocks.{flat[(s, r)]}.{rest}"
        else:
            name = _swap(key, LUKEMELAS_TOP, reverse=True)
        if name is None:
            raise CheckpointError(f"{source}: timm key {key!r} has no EfficientNet-PyTorch name")
        out[name] = value
    return out


def read_cnn_arch(sd: Mapping[str, Tensor], source: str, *, layout: Any, **_: Any) -> tuple[dict[str, Any], str]:
    """``(arch, arch_source)`` of a CNN file: its layout row's :class:`CnnNet` as a dict (the
    tensors are checked by the strict load; the ViT options ``stated`` / ``num_heads`` / ``timm_name``
    do not apply)."""
    return asdict(cnn_net(layout)), f"layout {layout.name}"


def load_cnn(ckpt: Any, *, img_size: int | None = None, **_: Any) -> Any:
    """Build the network of a ``family='cnn'`` checkpoint and load it whole, strictly.

    ``img_size`` is recorded only (a CNN takes any size; the teacher checks its grid). The ViT
    options of :func:`~comad.checkpoint.load.load_vit` do not apply and are ignored.

    Raises:
        CheckpointError: a wrong shape, or any missing / unexpected key (named).
    """
    net = CnnNet(**{k: tuple(v) if isinstance(v, list) else v for k, v in ckpt.arch.items()})
    model = build_cnn(net)
    report = load_strict(model, ckpt.state_dict, str(ckpt.source), what=type(model).__name__)
    return replace(ckpt, model=model, report=dict(ckpt.report, img_size=img_size, **report))
