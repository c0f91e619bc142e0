"""Dual-level KL distillation losses (docs/method.md §2, row 6).

Token level (local): at each student-visible position, the distribution over channels;
map level (global): for each channel, the distribution over positions (channel-wise
distillation). Both are ``tau^2 * KL(target || prediction)``, computed in fp32 with autocast
off (an outer bf16 autocast would otherwise round the softmaxes).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["token_kl", "map_kl", "MAP_POSITIONS"]

MAP_POSITIONS = ("targets", "all")


def token_kl(target: Tensor, pred: Tensor, tau: float = 1.0, valid: Tensor | None = None,
             per_image: bool = False) -> Tensor:
    """``tau^2 * KL(softmax(y/tau) || softmax(h/tau))`` over the last dim, mean over tokens.

    Args:
        target: (..., T, D) fused teacher tokens y (no gradient is taken through them unless
            they carry one).
        pred: (..., T, D) student tokens h, same shape.
        tau: temperature tau_t.
        valid: optional (..., T) bool, tokens that have a target. Each row of T tokens (an
            image) then contributes the mean over its valid tokens (0 when it has none) and the
            result is the mean over rows: tokens without a target neither pull the student
            nor dilute the others, and every image weighs the same (so that DDP's gradient
            average stays the full-batch gradient). With every token valid this is the plain
            mean.
        per_image: return each image's loss, (...,) (the per-teacher fusion weighs images and
            teachers itself, comad.fusion), instead of their mean.
    """
    if target.shape != pred.shape:
        raise ValueError(f"token_kl: target {tuple(target.shape)} and prediction {tuple(pred.shape)} differ")
    if valid is not None and valid.shape != target.shape[:-1]:
        raise ValueError(f"token_kl: valid {tuple(valid.shape)} does not match the tokens {tuple(target.shape[:-1])}")
    with torch.autocast(device_type=target.device.type, enabled=False):
        log_p = F.log_softmax(target.float() / tau, dim=-1)
        log_q = F.log_softmax(pred.float() / tau, dim=-1)
        kl = (log_p.exp() * (log_p - log_q)).sum(-1)
        if valid is None:
            return tau**2 * (kl.mean(-1) if per_image else kl.mean())
        per_row = (kl * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        return tau**2 * (per_row if per_image else per_row.mean())


def map_kl(target: Tensor, pred: Tensor, valid: Tensor, tau: float = 4.0, positions: str = "targets",
           per_image: bool = False) -> Tensor:
    """Channel-wise KL over positions: ``tau^2 * KL(softmax_p(Y_c/tau) || softmax_p(H_c/tau))``.

    Args:
        target: (B, N, D) fused target map Y.
        pred: (B, N, D) reconstructed map H.
        valid: (B, N) bool, positions that have a target.
        tau: temperature tau_m.
        positions: ``targets`` — both distributions over the positions with a target;
            ``all`` — the prediction's softmax runs over all N positions (mass it puts on
            positions without a target is penalised), the target's over its own positions.

        per_image: return each image's mean over channels, (B,), instead of the mean over images.

    Returns:
        the mean over channels and images (or (B,) with ``per_image``).
    """
    if positions not in MAP_POSITIONS:
        raise ValueError(f"map_kl positions must be one of {MAP_POSITIONS}, got {positions!r}")
    if target.shape != pred.shape or valid.shape != target.shape[:2]:
        raise ValueError(
            f"map_kl: expected target/pred (B,N,D) and valid (B,N); got {tuple(target.shape)}, "
            f"{tuple(pred.shape)}, {tuple(valid.shape)}"
        )
    m = valid.unsqueeze(-1)
    neg_inf = torch.finfo(torch.float32).min
    with torch.autocast(device_type=target.device.type, enabled=False):
        log_p = F.log_softmax((target.float() / tau).masked_fill(~m, neg_inf), dim=1)
        pred_logits = pred.float() / tau
        if positions == "targets":
            pred_logits = pred_logits.masked_fill(~m, neg_inf)
        log_q = F.log_softmax(pred_logits, dim=1)
        kl = torch.where(m, log_p.exp() * (log_p - log_q), torch.zeros_like(log_p)).sum(1)  # (B, D)
        return tau**2 * (kl.mean(1) if per_image else kl.mean())
