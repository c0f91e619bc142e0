"""Step (b), the project's own step, and the variants a row names (``shipped+bf16t+compile``).

``shipped``: ``CoMADDistiller.make_masks`` + ``compute_losses`` + backward + AdamW with the
runner's settings, under ``torch.autocast(<device>, bfloat16)`` on CUDA as the runner uses it
(on the CPU the runner uses no autocast: fp32). Options, each a switch a user can set:

* ``+bf16`` (CPU only): bf16 autocast on the CPU (the runner's ``amp='on'``);
* ``+bf16t``: the teachers held and run in bf16 (``model.teacher_precision='bf16'``);
* ``+compile``: the loss computation ``torch.compile``d as one graph (``model.compile=True``).
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["ShippedStep", "PHASES", "VARIANT_FLAGS", "parse_variant", "configured"]

#: The phases of a step that :func:`benchmarks.distill.timing.phase_times` times (``ShippedStep(..., mark=)``).
PHASES = ("masks", "teachers", "student+losses", "backward", "optimizer")

VARIANT_FLAGS = ("bf16", "bf16t", "compile")


class ShippedStep:
    """Step (b): the distiller's own masks and losses, backward, AdamW (the runner's settings)."""

    def __init__(self, model: nn.Module, amp_dtype: torch.dtype | None, lr: float = 1.5e-4) -> None:
        self.m = model
        self.amp_dtype = amp_dtype
        params = [q for q in model.parameters() if q.requires_grad]
        self.opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=0.05)

    def __call__(self, images: Tensor, step: int, mark: Callable[[], None] | None = None) -> Tensor:
        """One step. With ``mark`` (diagnostics, :func:`benchmarks.distill.timing.phase_times`) the loss is
        computed in its two eager parts (``teacher_targets``, ``student_losses``) and ``mark()`` is
        called after each phase of :data:`PHASES`."""
        phased = mark is not None
        mark = mark or (lambda: None)
        masks = self.m.make_masks(images.shape[0], images.device, step=step)
        mark()
        with torch.autocast(images.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None):
            if not phased:
                out = self.m.compute_losses(images, masks)
            else:
                t_maps, seen = self.m.teacher_targets(images, masks)
                mark()
                out = self.m.student_losses(images, masks, t_maps, seen)
            loss = sum(v for k, v in out.items() if "loss" in k)
        mark()
        loss.backward()
        mark()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        mark()
        return loss.detach()


def parse_variant(name: str) -> tuple[str, frozenset[str]]:
    """``'shipped+bf16t+compile'`` -> ``('shipped', {'bf16t', 'compile'})``; the naive step takes none."""
    base, *flags = name.split("+")
    bad = set(flags) - set(VARIANT_FLAGS)
    if base not in ("naive", "shipped") or bad or (base == "naive" and flags) or len(set(flags)) != len(flags):
        raise ValueError(f"variant {name!r}: expected 'naive' or 'shipped' with options among "
                         f"{', '.join('+' + f for f in VARIANT_FLAGS)} (e.g. shipped+bf16t+compile)")
    return base, frozenset(flags)


@contextlib.contextmanager
def configured(model: nn.Module, flags: frozenset[str]) -> Iterator[None]:
    """The distiller set up as a variant asks: ``bf16t`` -> every teacher in ``bf16`` precision,
    ``compile`` -> ``model.compile_cfg = {}`` (the compiled graph is kept on the model across
    rows); restored on exit."""
    precisions = [t.precision for t in model.teachers]
    compile_cfg = model.compile_cfg
    try:
        for t in model.teachers:
            t.set_precision("bf16" if "bf16t" in flags else "amp")
        model.compile_cfg = {} if "compile" in flags else None
        yield
    finally:
        for t, prec in zip(model.teachers, precisions):
            t.set_precision(prec)
        model.compile_cfg = compile_cfg
