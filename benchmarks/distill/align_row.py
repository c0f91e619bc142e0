"""The ``align-fit`` row: what fitting the adapters into one shared space costs (docs/method.md §2, row 3).

The alignment (``model.adapter.align``, :mod:`comad.align`) is fitted during the first
``fit_images`` images and then frozen, so its cost is not a per-step one. The row measures, on
one batch of the preset's teachers at this row's batch size:

- ``moments_ms``: the float64 sufficient statistics of the tokens every teacher saw, on the
  device: paid on each step of the fit phase;
- ``fit_s``: the float64 fit on the CPU (gcca: an eigendecomposition of the teachers' joint
  width; procrustes: a few Procrustes sweeps): paid once per refit (a handful of times in the
  fit phase, refits at doubling image counts);
- ``adapter_ms``: the fitted adapters' forward on the step's kept tokens: paid on every step
  (it was there before the alignment too: the adapters only gained a bias).
"""
from __future__ import annotations

import statistics
import time
from typing import Any, ClassVar

import torch

from comad.align import fit_from_moments, moments
from comad.models.vit import scatter_tokens
from .context import Settings
from .loaders import synthetic_batches
from .runners import RUNNERS, Runner
from .timing import _sync

__all__ = ["AlignFitRunner"]


class AlignFitRunner(Runner):
    """``align-fit``: the alignment's one-off cost; one row per batch size (variant ``shipped``)."""

    data: ClassVar[str] = "align-fit"

    @classmethod
    def wants(cls, variant: str, settings: Settings) -> bool:
        return variant == "shipped"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.samples: dict[str, list[float]] = dict(moments_ms=[], fit_s=[], adapter_ms=[])

    def _teacher_tokens(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """This batch's teacher tokens at their kept positions, and the same at the shared positions."""
        m, dev = self.bench.model, self.bench.device
        images = next(synthetic_batches(self.batch, self.bench.settings.config["img_size"], dev, seed=self.batch))
        masks = m.make_masks(self.batch, dev, step=0)
        with torch.no_grad():
            toks = [t(images, idx, layers=(layer,)) for t, layer, idx in zip(m.teachers, m.teacher_layers, masks.teachers)]
        shared = masks.teacher_masks().all(0)
        return toks, [scatter_tokens(t, idx, masks.num_positions)[shared] for t, idx in zip(toks, masks.teachers)]

    def measure(self, r: int) -> None:
        m, dev = self.bench.model, self.bench.device
        if m is None:
            raise RuntimeError(self.bench.why_missing)
        method = m.alignment.method if m.alignment is not None else "none"
        if method == "none":
            self.row.update(note="model.adapter.align='none': nothing is fitted")
            return
        toks, shared = self._teacher_tokens()
        x = torch.cat(shared, -1)
        _sync(dev)
        t0 = time.perf_counter()
        stats = moments(x)
        _sync(dev)
        t1 = time.perf_counter()
        fit_from_moments(stats, m.alignment.dims, m.alignment.out_dim, method, m.alignment.whiten, m.alignment.shrinkage)
        t2 = time.perf_counter()
        with torch.no_grad():
            for a, t in zip(m.adapters, toks):  # warm
                a(t)
            _sync(dev)
            t3 = time.perf_counter()
            for a, t in zip(m.adapters, toks):
                a(t)
            _sync(dev)
        for k, v in (("moments_ms", 1e3 * (t1 - t0)), ("fit_s", t2 - t1), ("adapter_ms", 1e3 * (time.perf_counter() - t3))):
            self.samples[k].append(v)
        self._fill(method, x.shape[0], sum(m.alignment.dims))

    def _fill(self, method: str, tokens: int, width: int) -> None:
        med = {k: statistics.median(v) for k, v in self.samples.items()}
        self.row.update(med, steps=len(self.samples["fit_s"]), ms_per_step=med["adapter_ms"],
                        note=(f"align={method!r}: fit {med['fit_s']:.2f} s per refit (CPU float64, joint width {width}); "
                              f"statistics {med['moments_ms']:.1f} ms per fit-phase step ({tokens} shared tokens); "
                              f"adapters {med['adapter_ms']:.1f} ms every step"))

    def progress(self) -> str:
        return self.row.get("note", "")


RUNNERS[AlignFitRunner.data] = AlignFitRunner
