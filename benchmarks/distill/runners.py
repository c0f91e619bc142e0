"""Row runners: one class per kind of row (its ``data`` column), each filling one row dict.

In the spirit of timm's ``benchmark.py`` (``InferenceBenchmarkRunner``, ``TrainBenchmarkRunner``):
a runner is made for one (variant, batch) and ``run()`` returns its row. The suite runs the
rows of a batch size in interleaved rounds instead (``run_round(r)`` of every row in turn, R
times), so slow drifts of a shared machine hit every row alike; ``run()`` is that loop for one row.

A new kind of row is one small class registered in :data:`RUNNERS`:

* a new data path for the timed steps: subclass :class:`EndToEndRunner` (or
  :class:`TimedRunner`), set ``data`` and override ``batches()``;
* a row that is not a loop of timed steps (e.g. a one-off fit): subclass :class:`Runner`, set
  ``data``, override ``measure(r)`` (do the work in round 0, fill ``self.row``) and, if only some
  variants (or batch sizes) get the row, ``wants()`` (``wants_batch()``).

A failure in a row is recorded in it (``status``, ``traceback``) and printed; the other rows run.
"""
from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
from torch import Tensor

from .context import Bench, Settings
from .loaders import build_loader, synthetic_batches
from .timing import merge_timings, time_steps

__all__ = ["Runner", "TimedRunner", "ModelOnlyRunner", "EndToEndRunner", "DaliRunner",
           "DecodeRateRunner", "RUNNERS", "make_runners"]


class Runner:
    """One row of the table: ``row`` with ``row, variant, data, batch, status, note`` and what
    ``measure`` adds."""

    #: the row's ``data`` column, and its key in :data:`RUNNERS`
    data: ClassVar[str] = ""

    def __init__(self, bench: Bench, variant: str, batch: int, index: int = 0) -> None:
        self.bench = bench
        self.variant = variant
        self.batch = batch
        self.row: dict[str, Any] = dict(row=index, variant=variant, data=self.data, batch=batch, status="ok", note="")

    @classmethod
    def wants(cls, variant: str, settings: Settings) -> bool:
        """Whether ``variant`` gets a row of this kind (default: the end-to-end variants)."""
        return variant in (settings.e2e_variants or ())

    @classmethod
    def wants_batch(cls, variant: str, batch: int, settings: Settings) -> bool:
        """Whether the row of ``variant`` is made at ``batch`` too (default: at every batch size)."""
        return True

    def measure(self, r: int) -> None:
        """Round ``r`` of the measurement; fills ``self.row``."""
        raise NotImplementedError

    def progress(self) -> str:
        """The figures printed after a round."""
        return ""

    def close(self) -> None:
        """Release what the row holds (loader workers); called after its last round or a failure."""

    def run_round(self, r: int) -> None:
        """Round ``r``, guarded: a failure is recorded in the row and printed, and ends the row."""
        if self.row["status"] != "ok":
            return
        rounds = self.bench.settings.rounds
        label = f"{self.variant:16s} {self.data:14s} B={self.batch:<4d} round {r + 1}/{rounds}"
        try:
            self.measure(r)
            print(f"{label} {self.progress()}", flush=True)
        except Exception as e:  # recorded in the table and JSON, and printed in full
            msg = str(e).splitlines()[0][:160] if str(e) else ""
            self.row["status"] = f"failed: {type(e).__name__}: {msg}"
            self.row["traceback"] = traceback.format_exc()
            print(f"{label} FAILED\n{self.row['traceback']}", file=sys.stderr, flush=True)
        finally:
            if r == rounds - 1 or self.row["status"] != "ok":
                self.close()
            if self.bench.settings.cuda:
                torch.cuda.empty_cache()

    def run(self) -> dict[str, Any]:
        """Every round of this row alone; its row."""
        for r in range(self.bench.settings.rounds):
            self.run_round(r)
        return self.row


class TimedRunner(Runner):
    """A loop of timed steps of the row's variant on ``batches()``: warm-up in round 0, then
    ``timed_steps()`` steps per round; the row's figures are cumulative over the rounds."""

    def __init__(self, bench: Bench, variant: str, batch: int, index: int = 0) -> None:
        super().__init__(bench, variant, batch, index)
        self.flops = bench.flops["naive" if variant == "naive" else "shipped"]
        self.row["gflop_per_img"] = self.flops["total"] / 1e9
        self.n = self.timed_steps()
        self.warm = bench.settings.warmup + self.extra_warmup()
        self.done = 0
        self._it: Iterator[Tensor] | None = None
        self._res: dict[str, Any] | None = None

    def timed_steps(self) -> int:
        return self.bench.settings.steps

    def extra_warmup(self) -> int:
        return 0

    def batches(self) -> Iterator[Tensor]:
        """The row's normalised (B, 3, S, S) device batches (enough for every round)."""
        raise NotImplementedError

    def measure(self, r: int) -> None:
        step = self.bench.step(self.variant)
        if self._it is None:
            self._it = self.batches()
        with self.bench.scope(self.variant):
            res = time_steps(step, self._it, self.warm if r == 0 else 0, self.n, self.bench.device,
                             start=self.done + (0 if r == 0 else self.warm))
        self.done += self.n
        self._res = merge_timings(self._res, res)
        self.row.update(self.figures(self._res))

    def figures(self, res: dict[str, Any]) -> dict[str, Any]:
        """The row's columns from the merged timings of its rounds so far."""
        img_per_s = self.batch * self.done / (res["total_ms"] / 1e3)
        median_ms = statistics.median(res["per_step_ms"])
        tflops = self.flops["total"] * img_per_s / 1e12
        peak, cpu_bf16 = self.bench.mfu_peak(self.variant)
        flags = self.bench.settings.flags[self.variant]
        notes = (["CPU bf16 autocast"] if "bf16" in flags else []) + (["bf16 teachers"] if "bf16t" in flags else [])
        notes += ["MFU vs the bf16 matmul peak"] if cpu_bf16 else []
        notes += [f"warm-up incl. compile {res['warmup_s']:.1f} s"] if "compile" in flags else []
        return dict(steps=self.done, img_per_s=img_per_s, ms_per_step=res["total_ms"] / self.done,
                    ms_per_step_median=median_ms, img_per_s_median=self.batch / (median_ms / 1e3),
                    peak_mem_mib=res["peak_mem_mib"], tflops=tflops, mfu=tflops / peak,
                    per_step_ms=res["per_step_ms"], warmup_s=res["warmup_s"], note="; ".join(notes))

    def progress(self) -> str:
        r = self.row
        return f"{r['img_per_s']:10.1f} img/s {r['ms_per_step']:9.2f} ms/step {r['tflops']:8.3f} TFLOP/s (cumulative)"

    def close(self) -> None:
        if self._it is not None and hasattr(self._it, "close"):
            self._it.close()  # stops a loader's workers
        self._it = None


class ModelOnlyRunner(TimedRunner):
    """``model``: synthetic images already on the device (every variant gets this row)."""

    data = "model"

    @classmethod
    def wants(cls, variant: str, settings: Settings) -> bool:
        return True

    def batches(self) -> Iterator[Tensor]:
        return synthetic_batches(self.batch, self.bench.settings.config["img_size"], self.bench.device, seed=self.batch)


class EndToEndRunner(TimedRunner):
    """``e2e``: the JPEGs through the training data pipeline (DataLoader workers decode and crop)."""

    data = "e2e"
    #: the :data:`benchmarks.distill.loaders.LOADERS` kind
    loader = "cpu"

    def timed_steps(self) -> int:
        return self.bench.settings.e2e_steps

    def extra_warmup(self) -> int:
        # The workers start together and deliver their first batches at once (up to workers x
        # prefetch of them): a row whose step could outrun the loader warms up through that
        # burst, so its timed steps see the steady state.
        s = self.bench.settings
        return s.workers * s.prefetch if self.variant != "naive" else 0

    def batches(self) -> Iterator[Tensor]:
        s = self.bench.settings
        if s.data is None:
            raise ValueError(f"{self.data} rows need an ImageFolder root (Settings.data)")
        return build_loader(self.loader, s.data, s.config["img_size"], self.batch, self.warm + self.n * s.rounds,
                            s.workers, self.bench.device, s.prefetch)


class DaliRunner(EndToEndRunner):
    """``e2e-dali``: the train loader of ``data.backend='dali'`` (:mod:`comad.data.dali_loader`)
    with ``workers`` DALI threads: the ``mixed`` decoder (hardware JPEG decoder where present)
    and the resize on the GPU; DALI's CPU mode without CUDA. Shipped variants only."""

    data = "e2e-dali"
    loader = "dali"

    @classmethod
    def wants(cls, variant: str, settings: Settings) -> bool:
        return variant != "naive" and super().wants(variant, settings)

    def extra_warmup(self) -> int:
        return self.bench.settings.prefetch + 1  # DALI's queue and the reader's fill at the start


class DecodeRateRunner(Runner):
    """``decode-cpu``: the torch path's images per second on one CPU core -- decode (PIL) +
    RandomResizedCrop + flip of the JPEGs in this process on one torch thread, no model step.
    One row per run (the first end-to-end variant, its first batch size); ``images`` per round,
    cropped to ``img_size`` (the configs' 224 px, whatever the preset). The note records the
    machine's 1-minute load average at the start of each round."""

    data = "decode-cpu"
    images: ClassVar[int] = 256
    img_size: ClassVar[int] = 224

    def __init__(self, bench: Bench, variant: str, batch: int, index: int = 0) -> None:
        super().__init__(bench, variant, batch, index)
        self.row["variant"] = "-"  # no step runs
        self.n, self.seconds, self.loads = 0, 0.0, []
        self._ds: Any = None

    @classmethod
    def wants(cls, variant: str, settings: Settings) -> bool:
        return variant == (settings.e2e_variants or settings.variants)[0]

    @classmethod
    def wants_batch(cls, variant: str, batch: int, settings: Settings) -> bool:
        batches = settings.compile_batches if "compile" in settings.flags[variant] else settings.batches
        return batch == (batches or [batch])[0]

    def measure(self, r: int) -> None:
        from comad.data import ImageFolderDataset, build_train_transform

        s = self.bench.settings
        if s.data is None:
            raise ValueError(f"{self.data} rows need an ImageFolder root (Settings.data)")
        if self._ds is None:
            self._ds = ImageFolderDataset(s.data, split="train", on_corrupt="error",
                                          transform=build_train_transform(self.img_size, normalize=False))
        self.loads.append(os.getloadavg()[0])
        order = np.random.default_rng(r).integers(0, len(self._ds), self.images).tolist()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            for i in order:
                self._ds[i]
            self.seconds += time.perf_counter() - t0
        finally:
            torch.set_num_threads(threads)
        self.n += len(order)
        self.row.update(steps=self.n, img_per_s=self.n / self.seconds,
                        note=f"1 core, {self.img_size} px crops, no model; load average "
                        + ", ".join(f"{x:.2f}" for x in self.loads))

    def progress(self) -> str:
        return f"{self.row['img_per_s']:10.1f} img/s on one core (decode + crop + flip; cumulative)"


#: the row kinds by their ``data`` column (``Settings.data_kinds`` names them)
RUNNERS: dict[str, type[Runner]] = {cls.data: cls for cls in (ModelOnlyRunner, EndToEndRunner, DaliRunner,
                                                              DecodeRateRunner)}


def make_runners(bench: Bench, variants: list[str], batch: int, first_index: int) -> list[Runner]:
    """The rows of ``variants`` at ``batch``, in table order: by data path, then variant."""
    runners: list[Runner] = []
    for kind in bench.settings.data_kinds:
        cls = RUNNERS[kind]
        for v in variants:
            if cls.wants(v, bench.settings) and cls.wants_batch(v, batch, bench.settings):
                runners.append(cls(bench, v, batch, first_index + len(runners)))
    return runners
