"""Optimizer wrappers that stop before a non-finite update: they honour a step the distiller
marked to skip (``nan_policy='skip'``) and, for any other model (the dense tasks' mmseg / mmdet
models), stop with an error naming the iteration when the loss is not finite on some rank, before
its backward and update, so the last checkpoint in the work dir stays the last good one."""
from __future__ import annotations

from typing import Any

import torch
from mmengine.optim import AmpOptimWrapper, OptimWrapper

from ..nonfinite import CHECKED_ATTR, SKIP_UPDATE_ATTR, stop_if_nonfinite

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
        if not getattr(loss, CHECKED_ATTR, False):
            from mmengine.logging import MessageHub

            it = MessageHub.get_current_instance().get_info("iter")
            stop_if_nonfinite(loss, None if it is None else int(it) + 1)
        super().update_params(loss, step_kwargs, zero_kwargs)  # type: ignore[misc]


class ComadOptimWrapper(_SkipMarkedSteps, OptimWrapper):
    """mmengine's ``OptimWrapper`` that skips marked steps and stops before a non-finite update."""


class ComadAmpOptimWrapper(_SkipMarkedSteps, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` that skips marked steps and stops before a non-finite update."""
