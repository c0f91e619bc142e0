"""The FLOP model of one distillation step: analytic matmul FLOPs by part, and a counter check.

:func:`step_flops` counts, from the model dimensions and token counts, the matmul FLOPs (2 per
multiply-add) of every ViT, the adapters and the decoder: patch embedding, qkv, projection,
MLP, attention scores and attention-weighted sum. Training counts 3x the forward pass (the
gradients with respect to both operands of every matmul), the patch embedding 2x (its input,
the images, needs no gradient); the frozen teachers and adapters run forward only.

:func:`count_flops` measures the same quantity with ``torch.utils.flop_counter.FlopCounterMode``
by running a callable (tests check that the two agree on a tiny configuration). It counts
model FLOPs, as MFU wants them: the fused attention kernels' backward is counted as the
gradients of its two matmuls (2x the forward), not with the recomputation of the scores that
torch's own formula for flash attention includes; the CPU's fused attention, which torch's
counter does not know, is counted the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

if TYPE_CHECKING:
    from .parts import Parts

__all__ = ["vit_blocks_flops", "patch_embed_flops", "linear_flops", "VitDims", "step_flops", "flops_for",
           "count_flops"]


def vit_blocks_flops(dim: int, depth: int, tokens: int, mlp_ratio: float = 4.0) -> float:
    """Forward matmul FLOPs of ``depth`` transformer blocks (width ``dim``) on ``tokens`` tokens.

    Per block: qkv ``2·T·D·3D`` + projection ``2·T·D·D`` + MLP ``2·2·T·D·H`` (H = int(D·mlp_ratio))
    + attention scores and weighted sum ``2·2·T²·D``.
    """
    hidden = int(dim * mlp_ratio)
    per_block = 2 * tokens * dim * (3 * dim + dim) + 2 * 2 * tokens * dim * hidden + 2 * 2 * tokens * tokens * dim
    return float(depth * per_block)


def patch_embed_flops(num_patches: int, dim: int, patch_size: int, in_chans: int = 3) -> float:
    """Forward FLOPs of a patch-embedding convolution (one matmul of ``in_chans·p²`` -> ``dim``)."""
    return float(2 * num_patches * in_chans * patch_size * patch_size * dim)


def linear_flops(tokens: int, d_in: int, d_out: int) -> float:
    """Forward FLOPs of a linear layer ``d_in -> d_out`` on ``tokens`` tokens."""
    return float(2 * tokens * d_in * d_out)


@dataclass
class VitDims:
    """The sizes of a ViT the FLOP count needs."""

    embed_dim: int
    depth: int
    mlp_ratio: float = 4.0
    patch_size: int = 16
    in_chans: int = 3
    prefix: int = 1  # CLS

    @classmethod
    def of(cls, vit: nn.Module) -> "VitDims":
        """The dims of a timm ``VisionTransformer``."""
        blk = vit.blocks[0]
        return cls(int(vit.embed_dim), len(vit.blocks), blk.mlp.fc1.out_features / vit.embed_dim,
                   int(vit.patch_embed.patch_size[0]), int(vit.patch_embed.proj.in_channels), int(vit.num_prefix_tokens))


def step_flops(teachers: Sequence[VitDims], teacher_tokens: Sequence[int], student: VitDims, student_tokens: int,
               decoder_dim: int, decoder_depth: int, decoder_mlp_ratio: float, num_positions: int,
               naive: bool) -> dict[str, float]:
    """Analytic matmul FLOPs of one training step, per image, by part.

    Args:
        teachers / teacher_tokens: each teacher's dims and kept patches (without CLS).
        student / student_tokens: the student's dims and kept patches.
        decoder_*: the decoder (its blocks run on all ``num_positions`` tokens, no CLS).
        naive: teachers and student compute all ``num_positions`` patches (step (a)).

    Returns:
        dict of ``teachers``, ``adapters``, ``student``, ``decoder`` and ``total`` FLOPs.
    """
    n = num_positions
    t_f = a_f = 0.0
    for dims, kept in zip(teachers, teacher_tokens):
        run = n if naive else kept
        t_f += patch_embed_flops(n, dims.embed_dim, dims.patch_size, dims.in_chans)
        t_f += vit_blocks_flops(dims.embed_dim, dims.depth, dims.prefix + run, dims.mlp_ratio)
        a_f += linear_flops(kept, dims.embed_dim, student.embed_dim)  # adapters on the kept tokens
    s_run = n if naive else student_tokens
    s_f = 2 * patch_embed_flops(n, student.embed_dim, student.patch_size, student.in_chans)  # fwd + weight grad
    s_f += 3 * vit_blocks_flops(student.embed_dim, student.depth, student.prefix + s_run, student.mlp_ratio)
    d_fwd = (linear_flops(student_tokens, student.embed_dim, decoder_dim)
             + vit_blocks_flops(decoder_dim, decoder_depth, n, decoder_mlp_ratio)
             + linear_flops(n, decoder_dim, student.embed_dim))
    d_f = 3 * d_fwd
    return dict(teachers=t_f, adapters=a_f, student=s_f, decoder=d_f, total=t_f + a_f + s_f + d_f)


def flops_for(parts: "Parts", naive: bool) -> dict[str, float]:
    """:func:`step_flops` of the benchmark's pieces (token counts of the mask generator at step 0)."""
    mg = parts.mask_generator
    dec = parts.decoder
    dec_dim = int(dec.pos_embed.shape[-1])
    return step_flops([VitDims.of(t.vit) for t in parts.teachers], [mg.count(r) for r in mg.teacher_ratios(0.0)],
                      VitDims.of(parts.student), mg.count(mg.student_keep), dec_dim, len(dec.blocks),
                      dec.blocks[0].mlp.fc1.out_features / dec_dim, mg.num_positions, naive)


# ---------------------------------------------------------------------------- counter check
def _attention_flop(query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None, **kwargs: Any) -> int:
    return sdpa_flop_count(query, key, value)


def _attention_backward_flop(grad_out: Any, query: Any, key: Any, value: Any, *args: Any, out_shape: Any = None,
                             **kwargs: Any) -> int:
    return 2 * sdpa_flop_count(query, key, value)  # d/dq, d/dk of q·kᵀ; d/dp, d/dv of p·v


def _model_flop_mapping() -> dict[Any, Callable[..., int]]:
    aten = torch.ops.aten
    fwd = [aten._scaled_dot_product_flash_attention_for_cpu]
    bwd = [aten._scaled_dot_product_flash_attention_for_cpu_backward, aten._scaled_dot_product_flash_attention_backward,
           aten._scaled_dot_product_efficient_attention_backward, aten._scaled_dot_product_cudnn_attention_backward]
    return {**{op: _attention_flop for op in fwd}, **{op: _attention_backward_flop for op in bwd}}


def count_flops(fn: Callable[[], Any]) -> int:
    """The model FLOPs ``fn()`` runs (forward and backward), counted by ``FlopCounterMode``."""
    with FlopCounterMode(display=False, custom_mapping=_model_flop_mapping()) as counter:
        fn()
    return int(counter.get_total_flops())
