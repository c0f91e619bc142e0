"""MAE-style token dropping for timm ``VisionTransformer`` modules.

One function serves teachers and student: patch-embed the full image, add position
embeddings, keep only the patches listed per sample (one batched ``gather``, no per-sample
loop), prepend the prefix tokens (CLS), and run the blocks on the shorter sequence.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["gather_tokens", "scatter_tokens", "embed_patches", "forward_kept_tokens"]


def gather_tokens(x: Tensor, idx: Tensor) -> Tensor:
    """Select tokens per sample: ``x`` (B, N, D), ``idx`` (B, K) int64 -> (B, K, D)."""
    return x.gather(1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def scatter_tokens(tokens: Tensor, idx: Tensor, num_positions: int) -> Tensor:
    """Place (B, K, D) tokens at positions ``idx`` of a zero (B, N, D) map (inverse of gather)."""
    out = tokens.new_zeros(tokens.shape[0], num_positions, tokens.shape[-1])
    return out.scatter(1, idx.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]), tokens)


def embed_patches(patch_embed: nn.Module, images: Tensor) -> Tensor:
    """timm ``PatchEmbed(images)`` -> (B, N, D), computed as one matmul over the patches.

    A convolution whose stride equals its kernel is a matmul of the non-overlapping patches
    (flattened as channel, row, column: the layout of the conv weight) with the flattened
    weight. cuDNN runs this shape far below the matmul rate (on an H100 it took 13 ms of a
    113 ms distillation step at batch 512); one GEMM takes about 1 ms. Other embeddings (a
    padded, overlapping or non-flattening one, another input size) go through ``patch_embed``.
    """
    proj = getattr(patch_embed, "proj", None)
    b, c, h, w = images.shape
    if not (isinstance(proj, nn.Conv2d) and proj.kernel_size == proj.stride and proj.padding == (0, 0)
            and proj.dilation == (1, 1) and proj.groups == 1 and getattr(patch_embed, "flatten", False)
            and not getattr(patch_embed, "dynamic_img_pad", True)
            and tuple(getattr(patch_embed, "img_size", None) or ()) == (h, w)):
        return patch_embed(images)
    ph, pw = proj.kernel_size
    x = images.reshape(b, c, h // ph, ph, w // pw, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // ph) * (w // pw), -1)
    return patch_embed.norm(F.linear(x, proj.weight.reshape(proj.out_channels, -1), proj.bias))


def _resolve_layers(layers: Sequence[int], depth: int) -> list[int]:
    out = []
    for i in layers:
        j = i + depth if i < 0 else i
        if not 0 <= j < depth:
            raise ValueError(f"layer index {i} is out of range for a ViT of depth {depth}")
        out.append(j)
    return out


def forward_kept_tokens(
    vit: nn.Module,
    images: Tensor,
    keep_idx: Tensor | None = None,
    layers: Sequence[int] = (-1,),
    return_prefix: bool = False,
) -> list[Tensor]:
    """Run a timm ViT on the kept patches only.

    Args:
        vit: a ``timm.models.vision_transformer.VisionTransformer``.
        images: (B, 3, H, W).
        keep_idx: (B, K) int64 patch indices (row-major over the patch grid) to keep per
            sample, or ``None`` for all patches.
        layers: block indices whose outputs to return (negative counts from the end). The
            last block's output goes through the final norm, as in ``forward_features``;
            intermediate outputs are returned as the blocks give them.
        return_prefix: keep the prefix tokens (CLS, registers) at the front of each output.

    Returns:
        one tensor per requested layer, (B, K, D) — or (B, P + K, D) with ``return_prefix``.
    """
    depth = len(vit.blocks)
    wanted = _resolve_layers(layers, depth)
    x = embed_patches(vit.patch_embed, images)
    x = vit._pos_embed(x)  # adds CLS/registers and position embeddings (timm semantics)
    n_prefix = vit.num_prefix_tokens
    if keep_idx is not None:
        x = torch.cat([x[:, :n_prefix], gather_tokens(x[:, n_prefix:], keep_idx)], dim=1)
    x = vit.patch_drop(x)
    x = vit.norm_pre(x)
    outs: dict[int, Tensor] = {}
    last = max(wanted)
    for i, blk in enumerate(vit.blocks):
        x = blk(x)
        if i in wanted:
            outs[i] = vit.norm(x) if i == depth - 1 else x
        if i == last:
            break
    start = 0 if return_prefix else n_prefix
    return [outs[i][:, start:] for i in wanted]
