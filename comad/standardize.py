"""Per-teacher standardisation of the targets with moving statistics (docs/method.md, row 3b).

UNIC (``naver/unic``, ``utils.py::standard_normalize``) standardises every teacher's features per
channel with exponential moving statistics, its CLS and patch tokens apart, so that no teacher
dominates the loss by its scale; RADIO's PHI-S and Theia's fixed statistics serve the same end.
``model.standardize`` does this to the adapted teacher maps (after the alignment, before the
gating or the per-teacher losses):

- per teacher k and channel c, over the positions k saw in the step's global batch (one
  ``all_reduce`` of count, sum and sum of squares, so every rank holds the same statistics):
  the batch mean and (population) standard deviation;
- moving statistics ``s <- (1 - m) s + m s_batch`` with ``m`` on a cosine from
  ``momentum_start`` (1.0: the first batch's own statistics) to ``momentum_end`` over training
  (UNIC's schedule, 1.0 -> 0.001);
- the maps become ``(t - mean) / (std + eps)`` at the positions k saw, 0 elsewhere.

One difference from UNIC, stated: the statistics are updated *before* they are applied, so the
first step is standardised by its own batch (UNIC applies the previous statistics, so its first
step uses the initial mean 0 and std 1, i.e. raw features). The statistics are buffers: they are
checkpointed and a resumed run continues them exactly. Outside training (``update=False``) the
stored statistics are applied as they are.
"""
from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Standardizer", "STANDARDIZE_DEFAULTS"]

#: ``model.standardize`` keys and their defaults (``standardize=True`` takes them all).
STANDARDIZE_DEFAULTS = dict(momentum_start=1.0, momentum_end=0.001, eps=1e-6)


class Standardizer(nn.Module):
    """Moving per-channel statistics of K teachers' adapted maps, CLS and patch tokens apart.

    Args:
        num_teachers: K.
        dim: the maps' width D.
        prefix: leading tokens (1 with ``include_cls``: the CLS keeps statistics of its own).
        momentum_start, momentum_end: the moving average's momentum at the start and the end of
            training (a cosine in between, over ``progress`` 0 -> 1).
        eps: added to the standard deviation.
    """

    def __init__(self, num_teachers: int, dim: int, prefix: int = 0, momentum_start: float = 1.0,
                 momentum_end: float = 0.001, eps: float = 1e-6) -> None:
        super().__init__()
        for name, m in (("momentum_start", momentum_start), ("momentum_end", momentum_end)):
            if not 0.0 < m <= 1.0:
                raise ValueError(f"model.standardize.{name} must be in (0, 1], got {m}")
        if eps <= 0:
            raise ValueError(f"model.standardize.eps must be > 0, got {eps}")
        self.momentum_start, self.momentum_end, self.eps, self.prefix = momentum_start, momentum_end, eps, prefix
        groups = 1 + int(prefix > 0)  # patch tokens, and the CLS apart
        self.register_buffer("mean", torch.zeros(num_teachers, groups, dim))
        self.register_buffer("std", torch.ones(num_teachers, groups, dim))

    def momentum(self, progress: float) -> float:
        """The moving average's momentum at ``progress`` (0 -> 1): cosine from start to end."""
        p = min(max(float(progress), 0.0), 1.0)
        return self.momentum_end + 0.5 * (self.momentum_start - self.momentum_end) * (1 + math.cos(math.pi * p))

    @torch.no_grad()
    def update(self, maps: Tensor, seen: Tensor, progress: float) -> None:
        """Fold one step's statistics (all ranks) into the moving ones.

        Args:
            maps: (K, B, P + N, D) adapted maps; seen: (K, B, P + N) bool.
        """
        x, w = maps.double(), seen.double()  # sums of squares in float64: no cancellation
        stats = []
        for sl in ([slice(self.prefix, None)] + ([slice(0, self.prefix)] if self.prefix else [])):
            xs, ws = x[:, :, sl], w[:, :, sl].unsqueeze(-1)
            count = ws.sum((1, 2)).expand(-1, x.shape[-1])  # (K, D)
            stats.append(torch.stack([count, (xs * ws).sum((1, 2)), (xs * xs * ws).sum((1, 2))]))  # (3, K, D)
        s = torch.stack(stats, 2)  # (3, K, G, D)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(s, op=dist.ReduceOp.SUM)
        count, total, squares = s.unbind(0)
        mean = total / count.clamp(min=1)
        std = (squares / count.clamp(min=1) - mean * mean).clamp(min=0).sqrt()
        m = self.momentum(progress)
        has = count > 0  # a teacher (group) with no position this step keeps its statistics
        self.mean.copy_(torch.where(has, (1 - m) * self.mean.double() + m * mean, self.mean.double()).float())
        self.std.copy_(torch.where(has, (1 - m) * self.std.double() + m * std, self.std.double()).float())

    def forward(self, maps: Tensor, seen: Tensor, progress: float = 0.0, update: bool = True) -> Tensor:
        """Standardised maps (K, B, P + N, D), 0 where a teacher did not see the position; the
        statistics are first updated with this batch when ``update``."""
        if update:
            self.update(maps, seen, progress)
        group = torch.zeros(maps.shape[2], dtype=torch.long, device=maps.device)
        group[: self.prefix] = 1
        mean, std = self.mean[:, group].unsqueeze(1), self.std[:, group].unsqueeze(1)  # (K, 1, P + N, D)
        return (maps.float() - mean) / (std + self.eps) * seen.unsqueeze(-1)
