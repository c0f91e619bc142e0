"""Frozen teachers: the shared base (precision, eval mode, input checks), the timm ViT run on the kept
patches only, and :func:`forward_teachers` (several teachers of different input sizes on one batch)."""
from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.vit import forward_kept_tokens

__all__ = ["Teacher", "FrozenTeacher", "PRECISIONS", "check_teacher_inputs", "precision_context", "forward_teachers"]

#: How a teacher computes (see :class:`Teacher`).
PRECISIONS = ("amp", "bf16", "fp32")


def check_teacher_inputs(owner: str, images: Tensor, keep_idx: Tensor | None, img_size: int, num_positions: int,
                         size_hint: str) -> None:
    """Validate a teacher's inputs: ``images`` (B, C, img_size, img_size) and ``keep_idx`` (B, K)
    int64 with K <= num_positions (or ``None``); errors start with ``owner`` and end with
    ``size_hint`` for a wrong image size."""
    if images.ndim != 4:
        raise ValueError(f"{owner}: images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if tuple(images.shape[-2:]) != (img_size, img_size):
        raise ValueError(f"{owner}: images are {tuple(images.shape[-2:])}, the teacher takes {img_size}x{img_size} ({size_hint})")
    if keep_idx is None:
        return
    if keep_idx.ndim != 2 or keep_idx.shape[0] != images.shape[0]:
        raise ValueError(f"{owner}: keep_idx must be (B, K) with B={images.shape[0]}, got shape {tuple(keep_idx.shape)}")
    if keep_idx.dtype != torch.int64:
        raise ValueError(f"{owner}: keep_idx must be int64, got {keep_idx.dtype}")
    if keep_idx.shape[1] > num_positions:
        raise ValueError(f"{owner}: keep_idx keeps {keep_idx.shape[1]} patches, more than the {num_positions} of an image")


def precision_context(precision: str, images: Tensor) -> tuple[Tensor, contextlib.AbstractContextManager]:
    """The images in the teacher's compute dtype and the autocast context of ``precision``
    (``amp``: bf16 autocast on CUDA, the caller's autocast elsewhere; ``bf16`` / ``fp32``: an
    outer autocast, e.g. the runner's, must not recast the matmuls)."""
    images = images.to(torch.bfloat16 if precision == "bf16" else torch.float32)
    if precision == "amp" and images.is_cuda:
        return images, torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    if precision == "amp":
        return images, contextlib.nullcontext()
    return images, torch.autocast(device_type=images.device.type, enabled=False)


class FrozenTeacher(nn.Module):
    """What every frozen teacher shares: a precision switch and a network that stays in eval mode.

    A subclass keeps its network in the attribute named by ``frozen_attr`` (the ViT's ``vit``,
    a CNN's ``net``) and sets ``name`` and ``source`` (for the error messages).
    """

    frozen_attr = "vit"
    name: str
    source: str
    precision: str

    def _frozen(self) -> nn.Module:
        return getattr(self, self.frozen_attr)

    def freeze(self, precision: str) -> None:
        """No gradients, eval mode, and ``precision`` (call once the network is set)."""
        self._frozen().requires_grad_(False)
        self._frozen().eval()
        self.set_precision(precision)

    def set_precision(self, precision: str) -> "FrozenTeacher":
        """Switch to ``amp`` / ``bf16`` / ``fp32`` (``bf16`` casts the weights; leaving it casts them
        back to fp32, which keeps their bf16 rounding)."""
        if precision not in PRECISIONS:
            raise ValueError(f"teacher {self.name} ({self.source}): precision must be one of {PRECISIONS}, got {precision!r}")
        self._frozen().to(torch.bfloat16 if precision == "bf16" else torch.float32)
        self.precision = precision
        return self

    @property
    def amp(self) -> bool:
        return self.precision == "amp"

    @amp.setter
    def amp(self, on: bool) -> None:
        self.set_precision("amp" if on else "fp32")

    def train(self, mode: bool = True) -> "FrozenTeacher":
        """Set the wrapper's flag; the network stays in eval mode (no dropout / drop path, BatchNorm
        on its statistics)."""
        super().train(mode)
        self._frozen().eval()
        return self


class Teacher(FrozenTeacher):
    """A frozen, eval-mode ViT teacher.

    Attributes:
        name: the checkpoint format (``mae``, ``mocov3``, ``ibot``, ...).
        source: the file it was loaded from.
        encoder: which encoder of the file (``base``/``momentum``, ``teacher``/``student``, ...).
        embed_dim: token width.
        num_positions: patches per image (196 for 224² / 16).
        patch_size, img_size: of the ViT.
        vit: the timm ``VisionTransformer`` (no head); frozen and always in eval mode.
        precision: ``amp`` (default) — fp32 weights, bf16 autocast when the images are on
            CUDA (matmuls in bf16, the residual stream and LayerNorms in fp32); ``bf16`` — the
            weights are held in bf16 and the whole forward runs in bf16 on any device (half the
            activation bytes of ``amp``: faster where the step is memory-bound, and the residual
            stream is rounded to bf16 after every block); ``fp32`` — no reduced precision.
        amp: ``precision == 'amp'`` (settable: ``False`` means ``fp32``, ``True`` means ``amp``).
        load_info: format, encoder, file architecture and the (empty) missing / unexpected
            key lists of the strict load.
    """

    def __init__(self, vit: nn.Module, name: str, source: str, encoder: str | None = None,
                 precision: str = "amp", load_info: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.vit = vit
        self.name = name
        self.source = source
        self.encoder = encoder
        self.load_info = dict(load_info or {})
        self.embed_dim = int(vit.embed_dim)
        self.num_positions = int(vit.patch_embed.num_patches)
        self.patch_size = int(vit.patch_embed.patch_size[0])
        self.img_size = int(vit.patch_embed.img_size[0])
        self.freeze(precision)

    def forward(
        self,
        images: Tensor,
        keep_idx: Tensor | None = None,
        layers: Sequence[int] | int = (-1,),
        return_cls: bool = False,
    ) -> Tensor | list[Tensor]:
        """Patch tokens of the kept patches.

        Args:
            images: (B, 3, H, W) at the teacher's ``img_size``.
            keep_idx: (B, K) int64 indices of the kept patches per sample (row-major over the
                patch grid), or ``None`` for all ``num_positions`` patches. The other patches
                are dropped before the first block (MAE style, batched gather).
            layers: block indices (negative from the end); the last block's output is taken
                after the final norm.
            return_cls: prepend the CLS token (output (B, 1 + K, D)).

        Returns:
            (B, K, D) float32 when one layer is requested, else a list of them. Computed under
            ``torch.no_grad`` (with bf16 autocast on CUDA for ``amp``, in bf16 for ``bf16``), so
            nothing keeps autograd state.
        """
        check_teacher_inputs(f"teacher {self.name} ({self.source})", images, keep_idx, self.img_size, self.num_positions,
                             "load it with img_size=... to resample its position embeddings")
        single = isinstance(layers, int)
        wanted = (layers,) if single else tuple(layers)
        images, cast = precision_context(self.precision, images)
        with torch.no_grad(), cast:
            outs = forward_kept_tokens(self.vit, images, keep_idx, wanted, return_prefix=return_cls)
        outs = [o.float() for o in outs]
        return outs[0] if single or len(outs) == 1 else outs

    def extra_repr(self) -> str:
        return (f"name={self.name}, encoder={self.encoder}, source={self.source}, embed_dim={self.embed_dim}, "
                f"num_positions={self.num_positions}, precision={self.precision}")


def forward_teachers(teachers: Sequence[nn.Module], layers: Sequence[int], images: Tensor,
                     keep_idx: Sequence[Tensor], return_cls: bool = False) -> list[Tensor]:
    """Each teacher's tokens at its kept positions, each from the batch at its own input size.

    Args:
        teachers: frozen teachers (``img_size``; called as ``t(images, keep_idx, layers, return_cls)``).
        layers: the block (ViT) or tap (CNN) each teacher is read at.
        images: (B, 3, S, S) normalised, the student's batch.
        keep_idx: per teacher (B, n_k) int64 kept positions of the shared token grid.

    Returns:
        per teacher (B, [1 +] n_k, C_k) float32 (no autograd state). The batch is resized once
        per distinct teacher input size (bilinear, antialiased; on the normalised batch, which
        commutes with the per-channel normalisation), so every teacher sees the same crop and
        grid position p is the same image region for all.
    """
    views = {int(images.shape[-1]): images}
    out = []
    with torch.no_grad():
        for teacher, layer, idx in zip(teachers, layers, keep_idx):
            size = int(teacher.img_size)
            if size not in views:
                views[size] = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True,
                                            align_corners=False)
            out.append(teacher(views[size], idx, layers=(layer,), return_cls=return_cls))
    return out
