"""Non-finite losses: stop, or skip the update, with every rank agreeing (docs/reliability.md).

:func:`guard_losses` is what :meth:`comad.distiller.CoMADDistiller.parse_losses` runs: one
all-reduce per step makes every rank agree on whether any rank saw a non-finite ``loss*`` term
and sums the corrupt files skipped for the step's global batch (logged as ``corrupt_skipped``,
the run's total). ``nan_policy='raise'`` stops before the update, naming the step and the term;
``'skip'`` marks the step's loss (:data:`SKIP_UPDATE_ATTR`, honoured by comad.engine's optimizer
wrappers) so that no rank updates, and stops once more than ``max_skipped`` steps were skipped.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

import torch
import torch.distributed as dist
from mmengine.logging import print_log
from torch import Tensor

__all__ = ["NAN_POLICIES", "SKIP_UPDATE_ATTR", "CHECKED_ATTR", "check_policy", "guard_losses", "stop_if_nonfinite"]

NAN_POLICIES = ("raise", "skip")
#: Attribute set on the loss that :func:`guard_losses` returns for a step whose update must be
#: skipped (``nan_policy='skip'``); comad.engine's optimizer wrappers honour it.
SKIP_UPDATE_ATTR = "comad_skip_update"
#: Set on a loss :func:`guard_losses` found finite on every rank (the optimizer wrappers need not check again).
CHECKED_ATTR = "comad_checked_finite"


def check_policy(nan_policy: str, max_skipped: int) -> None:
    """``model.nan_policy`` / ``model.max_skipped``, checked (errors name the key)."""
    if nan_policy not in NAN_POLICIES:
        raise ValueError(f"model.nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
    if not isinstance(max_skipped, int) or max_skipped < 0:
        raise ValueError(f"model.max_skipped must be an int >= 0, got {max_skipped!r}")


def stop_if_nonfinite(loss: Tensor, iteration: int | None) -> None:
    """The tasks' ``nan_policy='raise'``: a FloatingPointError (on every rank alike: one all-reduce)
    when ``loss`` is not finite on some rank, naming the iteration (1-based, as the log), before
    the update, so the last checkpoint in the work dir stays the last good one."""
    bad = (~torch.isfinite(loss.detach())).any().float().reshape(1)
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    if bool(bad.item()):
        raise FloatingPointError(
            f"non-finite loss ({float(loss.detach())} on this rank) at iteration {iteration}: training stopped "
            "before the update; the last checkpoint in the work dir is the last good one, and nothing is published "
            "from this run")


def guard_losses(model: Any, losses: dict[str, Tensor],
                 parse: Callable[[dict[str, Tensor]], tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, dict[str, Tensor]]:
    """``parse(losses)`` (mmengine's sum) when every term is finite on every rank, else the policy.

    ``model`` holds ``nan_policy``, ``max_skipped``, the counters ``skipped_steps`` and
    ``corrupt_skipped`` (buffers: checkpointed), ``_batch_corrupt`` and ``step``.
    """
    terms = {k: v for k, v in losses.items() if "loss" in k}
    ref = next(iter(terms.values()))
    nonfinite = torch.stack([~torch.isfinite(v.detach()).all() for v in terms.values()]).any()
    stats = torch.stack([nonfinite.float(), torch.tensor(float(model._batch_corrupt), device=ref.device)])
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    model._batch_corrupt = 0
    model.corrupt_skipped += int(stats[1])
    counters: dict[str, Tensor] = {}
    if int(model.corrupt_skipped):
        counters["corrupt_skipped"] = model.corrupt_skipped.float()
    if model.nan_policy == "skip":
        counters["skipped_steps"] = model.skipped_steps.float()
    if not bool(stats[0] > 0):
        loss, log_vars = parse(losses)
        log_vars.update(counters)
        setattr(loss, CHECKED_ATTR, True)
        return loss, log_vars
    bad = {k: float(v.detach()) for k, v in terms.items() if not torch.isfinite(v).all()}
    what = (f"non-finite loss at distillation step {int(model.step)}: "
            + (", ".join(f"{k} = {v}" for k, v in bad.items()) or "none on this rank")
            + " (terms on this rank; another rank may have produced it; the step is the iteration number "
        "of the log)")
    if model.nan_policy == "raise":
        raise FloatingPointError(
            what + ". Training stopped before the update; the last checkpoint in the work dir is the last "
            "good one (or set model.nan_policy='skip')."
        )
    model.skipped_steps += 1
    n = int(model.skipped_steps)
    if n > model.max_skipped:
        raise FloatingPointError(
            f"{what}. That is {n} skipped step(s), more than model.max_skipped = {model.max_skipped}: "
            "training stopped before the update; the last checkpoint in the work dir is the last good one."
        )
    print_log(f"{what}: update skipped on every rank ({n} of at most {model.max_skipped} skipped steps)",
              logger="current", level=30)
    loss = torch.zeros((), device=ref.device)
    setattr(loss, SKIP_UPDATE_ATTR, True)
    counters["skipped_steps"] = model.skipped_steps.float()
    return loss, OrderedDict(counters)
