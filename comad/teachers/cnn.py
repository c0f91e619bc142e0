"""A frozen CNN teacher read at a stride-16 feature map on the token grid.

A CNN has no tokens to drop. :class:`CNNTeacher` takes the same call as the ViT
:class:`comad.teachers.teacher.Teacher` — ``forward(images, keep_idx, layers)`` -> (B, K, C) at
the kept positions of the 16-pixel patch grid — and gets there like this:

1. the images (normalised like the student's, ImageNet statistics by default) are brought to
   the normalisation the weights were trained with (an affine map per channel; none when both
   agree);
2. every dropped 16×16 patch is filled with 0, the mean of that normalisation;
3. the network runs on the whole filled image up to the requested stride-16 block;
4. the (B, C, H/16, W/16) map is flattened row-major (the patch order) and read at the kept
   positions only.

**This is not token dropping.** A ViT teacher never sees a dropped patch. A CNN's receptive
field reaches past the mask: the features at a kept position mix in the neighbouring filled
patches (the mean colour and the edges between it and the image), and the convolutions cost
the same however few patches are kept. Its features at a kept position therefore differ from
its unmasked features there, and more so the more is dropped.

Files are read by the one loader (:func:`comad.teachers.load_teacher`, the ``'cnn'`` rows of
:data:`comad.checkpoint.LAYOUTS`); the networks and their taps are in :mod:`comad.checkpoint.cnn`.
"""
from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import Tensor, nn

from ..checkpoint.cnn import CNN_STRIDE, IMAGENET_MEAN, IMAGENET_STD, CnnNet
from ..models.vit import gather_tokens
from .teacher import FrozenTeacher, check_teacher_inputs, precision_context

__all__ = ["CNN_STRIDE", "CNNTeacher", "fill_dropped_patches"]


def fill_dropped_patches(images: Tensor, keep_idx: Tensor, patch_size: int, value: float = 0.0) -> Tensor:
    """Set every patch not listed in ``keep_idx`` to ``value``.

    Args:
        images: (B, C, H, W) with H, W multiples of ``patch_size``.
        keep_idx: (B, K) int64 kept patch indices, row-major over the (H/p, W/p) grid.

    Returns:
        (B, C, H, W): the kept patches unchanged, the others ``value``.
    """
    b, _, h, w = images.shape
    gh, gw = h // patch_size, w // patch_size
    keep = torch.zeros(b, gh * gw, dtype=torch.bool, device=images.device).scatter(1, keep_idx, True)
    keep = keep.view(b, 1, gh, 1, gw, 1).expand(b, 1, gh, patch_size, gw, patch_size).reshape(b, 1, h, w)
    return torch.where(keep, images, torch.full((), value, dtype=images.dtype, device=images.device))


def _expand(net: nn.Module, paths: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """Module paths (``a.*`` = the children of ``a``, applied repeatedly) -> [(name, module)] in order."""
    out = []
    for path in paths:
        level = [("", net)]
        for part in path.split("."):
            level = [(f"{n}.{c}".lstrip("."), m) for n, mod in level for c, m in mod.named_children()] if part == "*" \
                else [(f"{n}.{part}".lstrip("."), mod.get_submodule(part)) for n, mod in level]
        out.extend(level)
    return out


class CNNTeacher(FrozenTeacher):
    """A frozen, eval-mode CNN teacher on the 16-pixel token grid (see the module docstring).

    Args:
        net: the whole network (classifier included), loaded; cnn: its :class:`CnnNet` (body, taps,
            the weights' normalisation); name: the layout; source: the file.
        img_size: input side (a multiple of 16); input_mean, input_std: the normalisation of the
            images the teacher will be given (0-1 scale; ImageNet's by default).

    Attributes:
        name: the layout (``torchvision_mobilenet_v2``, ``efficientnet_lite0``); source: the file.
        net: the whole network (classifier included; frozen, always in eval mode); cnn: its CnnNet.
        taps: the stride-16 blocks ``layers`` indexes (``-1``: the last), all ``embed_dim`` wide.
        embed_dim: channels of the tapped blocks; img_size: input side (a multiple of 16);
        patch_size: 16, the feature stride; num_positions: (img_size / 16)².
        precision: ``amp`` / ``bf16`` / ``fp32`` as for :class:`comad.teachers.teacher.Teacher`.
        load_info: format, source, taps and the (empty) missing / unexpected key lists.
    """

    frozen_attr = "net"

    def __init__(self, net: nn.Module, cnn: CnnNet, name: str, source: str, img_size: int = 224,
                 precision: str = "amp", input_mean: Sequence[float] = IMAGENET_MEAN,
                 input_std: Sequence[float] = IMAGENET_STD, load_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        if img_size % CNN_STRIDE:
            raise ValueError(f"teacher {name} ({source}): img_size {img_size} is not a multiple of {CNN_STRIDE}")
        if len(input_mean) != 3 or len(input_std) != 3 or min(input_std) <= 0:
            raise ValueError(f"teacher {name} ({source}): input_mean and input_std need 3 values each (std > 0), "
                             f"got {tuple(input_mean)}, {tuple(input_std)}")
        self.net, self.name, self.source, self.encoder = net, name, source, None
        self.cnn, self.taps = cnn, tuple(cnn.taps)
        self.img_size, self.patch_size = int(img_size), CNN_STRIDE
        self.num_positions = (self.img_size // CNN_STRIDE) ** 2
        self.load_info = dict(load_info or {})
        # x_weights = x_input * scale + shift: from the images' normalisation to the weights'
        i_mean, i_std, w_mean, w_std = (torch.tensor(v, dtype=torch.float32).view(1, 3, 1, 1)
                                        for v in (input_mean, input_std, cnn.mean, cnn.std))
        self.register_buffer("scale", i_std / w_std, persistent=False)
        self.register_buffer("shift", (i_mean - w_mean) / w_std, persistent=False)
        self.renormalise = not (torch.equal(i_mean, w_mean) and torch.equal(i_std, w_std))
        body = _expand(net, cnn.body)
        names = [n for n, _ in body]
        missing = [t for t in self.taps if t not in names]
        if missing:
            raise ValueError(f"teacher {name}: taps {missing} are not among the body modules {names}")
        self._body = body  # a plain list: the modules are registered once, under ``net``
        self._tap_pos = [names.index(t) for t in self.taps]
        self.freeze(precision)
        self.embed_dim = self._check_grid()

    def _check_grid(self) -> int:
        """Run one blank image; every tap must give a (C, img/16, img/16) map of one width C."""
        with torch.no_grad():
            maps = self._run(torch.zeros(1, 3, self.img_size, self.img_size, dtype=next(self.net.parameters()).dtype),
                             list(range(len(self.taps))))
        g = self.img_size // CNN_STRIDE
        shapes = [tuple(m.shape[1:]) for m in maps]
        if any(s[1:] != (g, g) for s in shapes) or len({s[0] for s in shapes}) != 1:
            raise ValueError(f"teacher {self.name}: taps {list(self.taps)} give maps {shapes} at {self.img_size}px; "
                             f"expected one width at the stride-16 grid ({g}, {g})")
        return int(shapes[0][0])

    def _run(self, x: Tensor, taps: list[int]) -> list[Tensor]:
        """Run the body up to the last wanted tap: one (B, C, H/16, W/16) map per index of ``taps``."""
        stop, outs = self._tap_pos[max(taps)], {}
        wanted = {self._tap_pos[t]: t for t in taps}
        for i, (_, module) in enumerate(self._body[: stop + 1]):
            x = module(x)
            if i in wanted:
                outs[wanted[i]] = x
        return [outs[t] for t in taps]

    def _resolve(self, layers: Sequence[int]) -> list[int]:
        n = len(self.taps)
        bad = [i for i in layers if not -n <= i < n]
        if bad:
            raise ValueError(f"teacher {self.name}: layer indices {bad} are out of range for its {n} taps {list(self.taps)}")
        return [i % n for i in layers]

    def forward(self, images: Tensor, keep_idx: Tensor | None = None, layers: Sequence[int] | int = (-1,),
                return_cls: bool = False) -> Tensor | list[Tensor]:
        """Features of the kept patches at the stride-16 taps.

        Args:
            images: (B, 3, img_size, img_size), normalised with the ``input_mean`` / ``input_std``
                given at construction.
            keep_idx: (B, K) int64 kept patch indices (row-major over the 16-pixel grid), or
                ``None`` for all ``num_positions``. Dropped patches are filled with the mean
                before the forward (not token dropping: see the module docstring).
            layers: indices into ``taps`` (negative from the end).
            return_cls: not supported (a CNN has no class token): ValueError.

        Returns:
            (B, K, embed_dim) float32 for one layer, else a list; under ``torch.no_grad``.
        """
        owner = f"teacher {self.name} ({self.source})"
        if return_cls:
            raise ValueError(f"{owner}: a CNN teacher has no class token (return_cls=True)")
        check_teacher_inputs(owner, images, keep_idx, self.img_size, self.num_positions, "load it with img_size=...")
        single = isinstance(layers, int)
        taps = self._resolve((layers,) if single else tuple(layers))
        with torch.no_grad():
            x = images.float() * self.scale + self.shift if self.renormalise else images
            if keep_idx is not None:
                x = fill_dropped_patches(x, keep_idx, CNN_STRIDE, 0.0)
            x, cast = precision_context(self.precision, x)
            with cast:
                maps = self._run(x, taps)
        outs = [m.flatten(2).transpose(1, 2).float() for m in maps]  # (B, N, C), row-major patch order
        if keep_idx is not None:
            outs = [gather_tokens(o, keep_idx) for o in outs]
        return outs[0] if single or len(outs) == 1 else outs

    def extra_repr(self) -> str:
        return (f"name={self.name}, source={self.source}, embed_dim={self.embed_dim}, img_size={self.img_size}, "
                f"num_positions={self.num_positions}, taps={list(self.taps)}, precision={self.precision}")
