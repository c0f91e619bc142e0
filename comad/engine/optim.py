"""Optimizer wrappers that honour a step the distiller marked to skip (``nan_policy='skip'``)."""
from __future__ import annotations

from typing import Any

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ..nonfinite import SKIP_UPDATE_ATTR

__all__ = ["ComadOptimWrapper", "ComadAmpOptimWrapper"]


class _SkipMarkedSteps:
    """``update_params`` that drops a marked step: no backward, no optimizer step.

    :meth:`comad.distiller.CoMADDistiller.parse_losses` marks the loss of a step whose loss
    was non-finite on any rank (all ranks agree through one all-reduce), so every rank skips the
    same step and DDP's gradient all-reduce is skipped everywhere. The gradient accumulated so
    far in the current accumulation window is dropped too (it may not have been synchronised
    across ranks yet); the micro-batch still counts, so the window ends where it would have.
    """

    def update_params(self, loss: torch.Tensor, step_kwargs: dict[str, Any] | None = None,
                      zero_kwargs: dict[str, Any] | None = None) -> None:
        if getattr(loss, SKIP_UPDATE_ATTR, False):
            self.zero_grad(**(zero_kwargs or {}))  # type: ignore[attr-defined]
            self._inner_count += 1  # type: ignore[attr-defined]
            return
        super().update_params(loss, step_kwargs, zero_kwargs)  # type: ignore[misc]


class ComadOptimWrapper(_SkipMarkedSteps, OptimWrapper):
    """mmengine's ``OptimWrapper`` that skips steps the distiller marked (see the module)."""


class ComadAmpOptimWrapper(_SkipMarkedSteps, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` that skips steps the distiller marked (see the module)."""
