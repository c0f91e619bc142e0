"""The distillation throughput benchmark: a naive CoMAD step (a) against the project's step (b).

``benchmarks/benchmark_distill.py`` is the command line on top; benchmarks/README.md explains the
rows, the columns and the results. One concept per module:

- :mod:`.flops`: the analytic FLOP model of a step (and a ``FlopCounterMode`` count to check it);
- :mod:`.naive`: the naive reference step and its looped gating;
- :mod:`.variants`: the shipped step and the variant names (``shipped+bf16t+compile``);
- :mod:`.parts`: size presets, synthetic teacher files, the pieces both steps share;
- :mod:`.loaders`: synthetic, CPU-decode and DALI batches (a GPU-decode path, nvJPEG + ``roi_align``,
  lost to CPU workers in this benchmark's own measurement and was removed; benchmarks/README.md);
- :mod:`.timing`: timed steps, the matmul peak, sync audit, profiler and phase times;
- :mod:`.context`: a run's :class:`Settings` and shared :class:`Bench`;
- :mod:`.runners`: one runner class per kind of row (``model``, ``e2e``,
  ``e2e-dali``, ``decode-cpu``); :mod:`.align_row`: the ``align-fit`` row (the adapters' one-off
  alignment fit);
- :mod:`.suite`: a whole run in order; :mod:`.report`: ratios, table, CSV / JSON / text.
"""
from .align_row import AlignFitRunner
from .context import Bench, Settings, SettingsError
from .flops import (
    VitDims,
    count_flops,
    flops_for,
    linear_flops,
    patch_embed_flops,
    step_flops,
    vit_blocks_flops,
)
from .loaders import LOADERS, build_loader, synthetic_batches
from .naive import NaiveStep, masked_full_forward, naive_gating
from .parts import PRESETS, Parts, build_parts, load_distiller, write_teachers
from .report import COLUMNS, render_table, write_outputs
from .runners import (
    RUNNERS,
    DaliRunner,
    DecodeRateRunner,
    EndToEndRunner,
    ModelOnlyRunner,
    Runner,
    TimedRunner,
)
from .suite import Suite, run_benchmark
from .variants import ShippedStep, configured, parse_variant

__all__ = [
    "AlignFitRunner",
    "Bench", "Settings", "SettingsError",
    "VitDims", "count_flops", "flops_for", "linear_flops", "patch_embed_flops", "step_flops", "vit_blocks_flops",
    "LOADERS", "build_loader", "synthetic_batches",
    "NaiveStep", "masked_full_forward", "naive_gating",
    "PRESETS", "Parts", "build_parts", "load_distiller", "write_teachers",
    "COLUMNS", "render_table", "write_outputs",
    "RUNNERS", "DaliRunner", "DecodeRateRunner", "EndToEndRunner", "ModelOnlyRunner", "Runner",
    "TimedRunner",
    "Suite", "run_benchmark",
    "ShippedStep", "configured", "parse_variant",
]
