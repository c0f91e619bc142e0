"""Step (a), the naive reference: what a CoMAD step costs written without the project's shortcuts.

fp32; each teacher runs the full image (all tokens, timm ``forward_features``) and the kept
tokens are gathered afterwards; the student runs the full sequence with the dropped patches
masked out of attention (:func:`masked_full_forward`: the same function as token dropping, at
the full cost); un-fused attention; gating with Python loops over the teachers
(:func:`naive_gating`); AdamW.

These are deliberately different computations of the same function as the shipped step
(:class:`benchmarks.distill.variants.ShippedStep`, :func:`comad.models.vit.forward_kept_tokens`,
:func:`comad.gating.consensus_gating`): they read alike, but each line here is the slow way on
purpose, and tests check that both give the same values.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from comad.losses import map_kl, token_kl
from comad.masking import Masks, indices_to_mask
from comad.models.vit import gather_tokens, scatter_tokens
from .parts import Parts

__all__ = ["masked_full_forward", "naive_gating", "NaiveStep"]


def _attention_with_bias(attn: nn.Module, x: Tensor, bias: Tensor) -> Tensor:
    """timm ``Attention`` computed the un-fused way with an additive (B, 1, 1, T) bias."""
    if getattr(attn, "gate", None) is not None:
        raise ValueError("naive step: gated attention is not supported")
    b, t, _ = x.shape
    heads = attn.num_heads
    qkv = attn.qkv(x).reshape(b, t, 3, heads, -1).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    a = (q * attn.scale) @ k.transpose(-2, -1) + bias
    x = (a.softmax(dim=-1) @ v).transpose(1, 2).reshape(b, t, -1)
    norm = getattr(attn, "norm", None)
    if norm is not None:
        x = norm(x)
    return attn.proj(x)


def masked_full_forward(vit: nn.Module, images: Tensor, keep_idx: Tensor) -> Tensor:
    """The student the naive way: all patches through every block, the dropped ones masked out
    of attention (an additive -inf key bias), kept tokens gathered at the end.

    Computes the same function as :func:`comad.models.vit.forward_kept_tokens` (the dropped
    tokens never influence the kept ones) at the cost of the full sequence: (B, K, D).
    """
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    b, t = x.shape[:2]
    p = vit.num_prefix_tokens
    keep = torch.ones(b, t, dtype=torch.bool, device=x.device)
    keep[:, p:] = indices_to_mask(keep_idx, t - p)
    bias = torch.zeros(b, 1, 1, t, dtype=x.dtype, device=x.device).masked_fill(~keep[:, None, None, :], float("-inf"))
    for blk in vit.blocks:
        x = x + blk.drop_path1(blk.ls1(_attention_with_bias(blk.attn, blk.norm1(x), bias)))
        x = x + blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))
    return gather_tokens(vit.norm(x)[:, p:], keep_idx)


def _softmax_over_list(scores: list[Tensor]) -> list[Tensor]:
    """Softmax across K same-shaped tensors, one teacher at a time (0 where all are -inf)."""
    top = scores[0]
    for s in scores[1:]:
        top = torch.maximum(top, s)
    exps = [torch.exp(s - top) for s in scores]
    total = exps[0]
    for e in exps[1:]:
        total = total + e
    return [(e / total).nan_to_num(0.0) for e in exps]


def _looped_scores(s_n: Tensor, t_n: list[Tensor], seen: Sequence[Tensor], mode: str, combine: str,
                   temperature: float) -> list[Tensor]:
    """Each teacher's gating logit, from a loop over the teachers and their pairs."""
    scores = []
    for k in range(len(t_n)):
        affinity = (s_n * t_n[k]).sum(-1)
        acc = torch.zeros_like(affinity)
        cnt = torch.zeros_like(affinity)
        for j in range(len(t_n)):
            if j != k:
                acc = acc + (t_n[k] * t_n[j]).sum(-1) * seen[j]
                cnt = cnt + seen[j].float()
        agreement = torch.where(cnt > 0, acc / cnt.clamp(min=1), torch.ones_like(acc))
        # every mode's score computed, the asked one taken (consensus_gating computes only that one)
        by_mode = dict(joint=affinity + agreement if combine == "sum" else affinity * agreement, affinity=affinity,
                       agreement=agreement, mean=torch.zeros_like(affinity))
        scores.append((by_mode[mode] / temperature).masked_fill(~seen[k], float("-inf")))
    return scores


def naive_gating(student: Tensor, maps: Sequence[Tensor], seen: Sequence[Tensor], mode: str = "joint",
                 combine: str = "sum", temperature: float = 0.1, stop_gradient: bool = True
                 ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """:func:`comad.gating.consensus_gating` written with Python loops over the teachers.

    Args:
        student: (B, N, D); maps: K tensors (B, N, D); seen: K bool tensors (B, N).

    Returns:
        (target (B, N, D), has_target (B, N), weights: K tensors (B, N)).
    """
    maps = [m * s.unsqueeze(-1) for m, s in zip(maps, seen)]
    with torch.set_grad_enabled(torch.is_grad_enabled() and not stop_gradient):
        s_n = F.normalize(student.float(), dim=-1)
        t_n = [F.normalize(m.float(), dim=-1) for m in maps]
        weights = _softmax_over_list(_looped_scores(s_n, t_n, seen, mode, combine, temperature))
        has_target = seen[0]
        for s in seen[1:]:
            has_target = has_target | s
    target = weights[0].unsqueeze(-1).to(maps[0].dtype) * maps[0]
    for w, m in zip(weights[1:], maps[1:]):
        target = target + w.unsqueeze(-1).to(m.dtype) * m
    return target, has_target, weights


class NaiveStep:
    """Step (a): fp32, full-image teachers, masking applied afterwards, looped gating, AdamW."""

    def __init__(self, parts: Parts, lr: float = 1.5e-4) -> None:
        if any(layer != -1 for layer in parts.teacher_layers):
            raise ValueError(f"naive step: only the last teacher layer is supported, got layers {parts.teacher_layers}")
        self.p = parts
        params = [q for m in (parts.student, parts.decoder) for q in m.parameters() if q.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)

    def masks(self, batch: int, device: torch.device, step: int) -> Masks:
        g = torch.Generator().manual_seed(step)
        return self.p.mask_generator(batch, generator=g).to(device)

    def losses(self, images: Tensor, masks: Masks) -> Tensor:
        """The CoMAD loss of one batch, the naive way (a scalar)."""
        p, n = self.p, masks.num_positions
        maps, seen = [], []
        with torch.no_grad():
            for teacher, adapter, idx in zip(p.teachers, p.adapters, masks.teachers):
                vit = teacher.vit
                full = vit.forward_features(images)[:, vit.num_prefix_tokens:]  # all patches
                maps.append(scatter_tokens(adapter(gather_tokens(full, idx)), idx, n))
                seen.append(indices_to_mask(idx, n))
        h = masked_full_forward(p.student, images, masks.student)
        recon = p.decoder(h, masks.student)
        s_mask = indices_to_mask(masks.student, n).unsqueeze(-1)
        pred = torch.where(s_mask, scatter_tokens(h, masks.student, n), recon)
        target, has_target, _ = naive_gating(pred, maps, seen, **p.gating_cfg)
        lc = p.loss_cfg
        loss = lc["token_weight"] * token_kl(gather_tokens(target, masks.student), h, tau=lc["token_tau"])
        return loss + lc["map_weight"] * map_kl(target, recon, has_target, tau=lc["map_tau"], positions=lc["map_positions"])

    def __call__(self, images: Tensor, step: int) -> Tensor:
        loss = self.losses(images, self.masks(images.shape[0], images.device, step))
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return loss.detach()
