"""A whole benchmark run: every row in order, the diagnostics, the profiles, the outputs.

Order: for each batch size the rows of the eager variants (interleaved rounds); the shipped
step's diagnostics; profiles of the eager shipped variants; the ``+compile`` rows (last, as a
time limit may cut them) and their profiles. Outputs are rewritten after every row round.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Iterator

import torch

from .context import Bench, Settings, SettingsError
from .loaders import synthetic_batches
from .report import (
    OUTPUT_NAMES,
    fill_ratios,
    render_profile,
    render_table,
    write_outputs,
    write_table,
)
from .runners import RUNNERS, Runner, make_runners
from .timing import profile_step, sync_audit

__all__ = ["Suite", "run_benchmark"]


class Suite:
    """The rows, meta and outputs of one run on a :class:`Bench`."""

    def __init__(self, bench: Bench) -> None:
        self.bench = bench
        self.settings = bench.settings
        self.rows: list[dict[str, Any]] = []
        self.meta = bench.meta()
        self.title = (f"CoMAD step throughput, {self.meta['device']} ({self.settings.preset} config, img "
                      f"{self.settings.config['img_size']}px); MFU vs {self.meta['mfu_denominator']}")

    def run_group(self, runners: list[Runner]) -> None:
        """The rows of one batch size, in ``rounds`` interleaved rounds; then their ratios."""
        for r in range(self.settings.rounds):
            for runner in runners:
                runner.run_round(r)
                write_outputs(self.settings.out, self.rows + [x.row for x in runners], self.meta)
        self.rows.extend(x.row for x in runners)
        fill_ratios(self.rows)
        write_outputs(self.settings.out, self.rows, self.meta)

    def diagnostics(self) -> None:
        """Host syncs in one shipped step (CUDA) and the teachers' trainable / grad-holding
        parameters (0), into the meta; a failure is recorded there and the rows stand."""
        model = self.bench.model
        if model is None:
            return
        try:
            imgs = next(synthetic_batches(self.settings.batches[0], self.settings.config["img_size"], self.bench.device))
            if self.settings.cuda:
                self.meta["host_syncs_in_shipped_step"] = sync_audit(self.bench.shipped, imgs, 10_000)
            self.meta["teacher_params_trainable_or_with_grad"] = sum(
                p.grad is not None or p.requires_grad for t in model.teachers for p in t.parameters())
        except Exception:
            self.meta["diagnostics_error"] = traceback.format_exc()
            print(self.meta["diagnostics_error"], file=sys.stderr, flush=True)

    def profile(self, variants: list[str]) -> None:
        """``meta.profile`` of each shipped variant at the largest batch (with ``Settings.profile``)."""
        if not self.settings.profile or self.bench.model is None:
            return
        prof = self.meta.setdefault("profile", {})
        for v in variants:
            with self.bench.scope(v):
                try:
                    prof[v] = profile_step(self.bench.step(v), max(self.settings.batches), self.settings.config["img_size"],
                                           self.bench.device, phases="compile" not in self.settings.flags[v])
                except Exception:
                    prof[v] = dict(error=traceback.format_exc())
            self.publish()
        print(render_profile({v: prof[v] for v in variants}), flush=True)

    def publish(self, final: bool = False) -> None:
        """Rewrite the CSV, JSON and text table (and print the table when ``final``)."""
        write_outputs(self.settings.out, self.rows, self.meta)
        table = render_table(self.rows, self.title)
        write_table(self.settings.out, table)
        if final:
            print(table)

    def run(self) -> int:
        """Every row, diagnostic and profile; 0 when every row is ok, 1 when one failed, 3 when
        the distiller is missing (the shipped rows are then failed rows)."""
        s, b = self.settings, self.bench
        f = b.flops
        print(f"device {self.meta['device']}: {self.meta['mfu_denominator']}; analytic GFLOP/img naive "
              f"{f['naive']['total'] / 1e9:.2f}, shipped {f['shipped']['total'] / 1e9:.2f}; fused attention "
              f"{self.meta['fused_attention']}", flush=True)
        if b.why_missing:
            print(f"WARNING: {b.why_missing}; the shipped rows are reported as unavailable", file=sys.stderr, flush=True)
        eager = [v for v in s.variants if "compile" not in s.flags[v]]
        compiled = [v for v in s.variants if "compile" in s.flags[v]]
        for batch in s.batches:
            self.run_group(make_runners(b, eager, batch, len(self.rows)))
            self.publish()
        self.diagnostics()  # before the compile rows, which a time limit may cut
        self.publish()
        self.profile([v for v in eager if v != "naive"])
        for batch in s.compile_batches if compiled else []:
            self.run_group(make_runners(b, compiled, batch, len(self.rows)))
            self.publish()
        self.profile(compiled)
        self.publish(final=True)
        if self.meta.get("host_syncs_in_shipped_step"):
            print("host syncs in one shipped step:\n  " + "\n  ".join(self.meta["host_syncs_in_shipped_step"]))
        print("wrote " + ", ".join(str(s.out / name) for name in OUTPUT_NAMES))
        if b.model is None:
            return 3
        return 0 if all(r["status"] == "ok" for r in self.rows) else 1


@contextlib.contextmanager
def _teachers_dir(settings: Settings) -> Iterator[Path]:
    if settings.teachers_dir is not None:
        settings.teachers_dir.mkdir(parents=True, exist_ok=True)
        yield settings.teachers_dir
        return
    with tempfile.TemporaryDirectory(prefix="comad_bench_teachers_") as tmp:
        yield Path(tmp)


def _demo_photos(settings: Settings) -> Path:
    """The packaged demo photos as an ImageFolder under ``out`` (1.4x the input side)."""
    from comad.data import make_demo_imagefolder

    side = max(64, int(settings.config["img_size"] * 1.4))
    return Path(make_demo_imagefolder(settings.out / f"demo_photos_{side}", img_size=side, n_per_image=16,
                                      n_val_per_image=0))


def run_benchmark(settings: Settings) -> int:
    """Run the benchmark ``settings`` describe (outputs under ``settings.out``); the exit code of
    :meth:`Suite.run`."""
    s = settings
    unknown = [k for k in s.data_kinds if k not in RUNNERS]
    if unknown or not s.data_kinds:
        raise SettingsError("data_kinds", f"expected kinds among {sorted(RUNNERS)}, got {s.data_kinds}")
    s.out.mkdir(parents=True, exist_ok=True)
    if s.data is None and any(k != "model" for k in s.data_kinds):
        s.data = _demo_photos(s)
    if s.data is not None and not (Path(s.data) / "train").is_dir():
        raise SettingsError("data", f"{s.data}: expected an ImageFolder root with a train/ folder")
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 for the naive step
    torch.backends.cudnn.allow_tf32 = False
    if s.cuda:
        torch.backends.cudnn.benchmark = True  # the runner's env_cfg
    with _teachers_dir(s) as teachers_dir:
        return Suite(Bench(s, teachers_dir)).run()
