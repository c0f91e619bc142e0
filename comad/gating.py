"""Parameter-free consensus gating (docs/method.md §2, row 5).

For each position p and each teacher k that saw p:
affinity ``a_k(p) = cos(s(p), t_k(p))`` (s = the student's prediction),
agreement ``c_k(p) = mean_{j != k, j saw p} cos(t_k(p), t_j(p))`` (1 when k is alone),
``w_k(p) = softmax_k(score_k(p) / tau)`` over the teachers that saw p, with
``score = a + c`` (``combine='sum'``) or ``a * c`` (``'product'``); ``mode='affinity'`` or
``'agreement'`` keep one term, ``'mean'`` weights the teachers that saw p equally.
Fused target ``y(p) = sum_k w_k(p) t_k(p)``.

Everything runs in fp32 with autocast off: an outer bf16 autocast (mmengine's AMP) would
otherwise run the einsums in bf16 and change the weights by up to 0.04.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GatingOutput", "consensus_gating", "gate_stats", "MODES", "COMBINES"]

MODES = ("joint", "affinity", "agreement", "mean")
COMBINES = ("sum", "product")


@dataclass
class GatingOutput:
    weights: Tensor  # (K, B, N), 0 where a teacher did not see p; sums to 1 where has_target
    target: Tensor  # (B, N, D), 0 where no teacher saw p
    has_target: Tensor  # (B, N) bool
    affinity: Tensor  # (K, B, N)
    agreement: Tensor  # (K, B, N)


def consensus_gating(
    student: Tensor,
    teachers: Tensor,
    seen: Tensor,
    mode: str = "joint",
    combine: str = "sum",
    temperature: float = 0.1,
    stop_gradient: bool = True,
) -> GatingOutput:
    """Weight and fuse teacher tokens per position.

    Args:
        student: (B, N, D) the student's prediction at every position.
        teachers: (K, B, N, D) adapted teacher tokens (any value where unseen).
        seen: (K, B, N) bool, which teacher saw which position.
        mode: ``joint | affinity | agreement | mean``.
        combine: ``sum | product`` (how ``joint`` combines affinity and agreement).
        temperature: softmax temperature tau_g.
        stop_gradient: compute weights (not the targets' values) without gradient.

    Returns:
        :class:`GatingOutput`, all float32 (computed with autocast off).
    """
    if mode not in MODES:
        raise ValueError(f"gating mode must be one of {MODES}, got {mode!r}")
    if combine not in COMBINES:
        raise ValueError(f"gating combine must be one of {COMBINES}, got {combine!r}")
    if temperature <= 0:
        raise ValueError(f"gating temperature must be > 0, got {temperature}")
    if teachers.dim() != 4 or seen.shape != teachers.shape[:3] or student.shape != teachers.shape[1:]:
        raise ValueError(
            f"gating: expected student (B,N,D), teachers (K,B,N,D), seen (K,B,N); got "
            f"{tuple(student.shape)}, {tuple(teachers.shape)}, {tuple(seen.shape)}"
        )
    with torch.autocast(device_type=teachers.device.type, enabled=False):
        return _gate(student.float(), teachers.float(), seen, mode, combine, temperature, stop_gradient)


def _gate(student: Tensor, teachers: Tensor, seen: Tensor, mode: str, combine: str, temperature: float,
          stop_gradient: bool) -> GatingOutput:
    """:func:`consensus_gating` on fp32 inputs (checked), under whatever autocast state the caller set."""
    teachers = teachers * seen.unsqueeze(-1)  # unseen positions hold exact zeros
    with torch.set_grad_enabled(torch.is_grad_enabled() and not stop_gradient):
        s_n = F.normalize(student, dim=-1)
        t_n = F.normalize(teachers, dim=-1)
        affinity = torch.einsum("bnd,kbnd->kbn", s_n, t_n)
        pair = torch.einsum("kbnd,jbnd->kjbn", t_n, t_n)  # (K, K, B, N)
        k = teachers.shape[0]
        other = seen.unsqueeze(0) & ~torch.eye(k, dtype=torch.bool, device=seen.device)[:, :, None, None]
        n_other = other.sum(1)
        agreement = torch.where(n_other > 0, (pair * other).sum(1) / n_other.clamp(min=1), torch.ones_like(affinity))
        if mode == "mean":
            score = torch.zeros_like(affinity)
        elif mode == "affinity":
            score = affinity
        elif mode == "agreement":
            score = agreement
        else:
            score = affinity + agreement if combine == "sum" else affinity * agreement
        logits = (score / temperature).masked_fill(~seen, float("-inf"))
        has_target = seen.any(0)
        weights = torch.softmax(logits, dim=0).nan_to_num(0.0)  # columns with no teacher -> 0
    target = torch.einsum("kbn,kbnd->bnd", weights, teachers)
    return GatingOutput(weights, target, has_target, affinity, agreement)


@torch.no_grad()
def gate_stats(names: Sequence[str], g: GatingOutput, seen: Tensor, skip: int = 0) -> dict[str, Tensor]:
    """The logged means over patch positions of one gating (``seen`` (K, B, P + N); the first
    ``skip`` positions, a CLS, are left out): ``gate_<teacher>`` (its weight where it saw p),
    ``gate_shared_<teacher>`` (its weight where every teacher saw p: where the gating chooses among
    all of them; 1/K under ``mode='mean'``), ``agreement`` and ``affinity`` (where seen)."""
    w, sv = g.weights[:, :, skip:].float(), seen[:, :, skip:].float()
    shared = seen[:, :, skip:].all(0).float()
    out: dict[str, Tensor] = {}
    for k, name in enumerate(names):
        out[f"gate_{name}"] = (w[k] * sv[k]).sum() / sv[k].sum().clamp(min=1)
    for k, name in enumerate(names):
        out[f"gate_shared_{name}"] = (w[k] * shared).sum() / shared.sum().clamp(min=1)
    out["agreement"] = (g.agreement[:, :, skip:] * sv).sum() / sv.sum().clamp(min=1)
    out["affinity"] = (g.affinity[:, :, skip:] * sv).sum() / sv.sum().clamp(min=1)
    return out
