"""The learning curve: the default student at several schedule lengths, to choose the claims run's.

Each point is a run of its own (preset ``curve``: the default alone, one seed; only ``steps``
differs, each with its own warm-up then cosine to 0), written to ``<results_dir>/steps<N>/``
like any run. All points' pending units share one process pool. ``curve.csv``, ``curve.md`` and
``curve.png`` put the points beside the teachers' own features and the raw pixels, on the
linear, k-NN and dense probes.
"""
from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd

from comad.io import atomic_open, atomic_write_text

from .config import EvidenceConfig
from .run import Run, run_jobs
from .teachers import prepare_teachers

__all__ = ["run_curve"]


def run_curve(base: EvidenceConfig, steps: list[int], work_dir: str | os.PathLike, results_dir: str | os.PathLike,
              show: bool = True) -> dict[str, Any]:
    """Run (or finish) one evidence run per schedule in ``steps`` and write the curve.

    Returns:
        dict(table=DataFrame, summary=str).
    """
    if not steps or any(n <= base.warmup_steps for n in steps):
        raise ValueError(f"--curve {steps}: give schedules longer than the warm-up ({base.warmup_steps} steps)")
    t0, results_dir = time.monotonic(), Path(results_dir)
    runs = [Run(dataclasses.replace(base, name=f"{base.name}-{n}", steps=n), work_dir, results_dir / f"steps{n}")
            for n in steps]
    by_dir = {r.run_dir: r for r in runs}
    files = prepare_teachers(base, work_dir)
    jobs = {}  # the points share the teachers' probes (one result file for all: units.result_path)
    for r in runs:
        for job in r.pending():
            jobs.setdefault(job[1] if job[1].startswith("teachers") else (job[2], job[1]), job)
    jobs = sorted(jobs.values(), key=lambda j: -j[0].steps)  # longest first
    run_jobs(jobs, files, base.workers, show, lambda job: by_dir[job[2]].keep(job[1]))
    rows, teachers = [], None
    for r in runs:
        out = r.report(time.monotonic() - t0)
        scores = out["tables"]["scores"].set_index("condition")
        teachers = out["tables"]["teachers"]
        rows.append(dict(steps=r.cfg.steps, images=r.cfg.images_per_student,
                         **{f"{c}_{p}": scores.loc[c, f"{p}_mean"] for c in scores.index
                            for p in out["tables"]["probes"]}))
    table = pd.DataFrame(rows).astype({"steps": int, "images": int})
    with atomic_open(results_dir / "curve.csv", "w") as f:
        table.to_csv(f, index=False, float_format="%.2f")
    atomic_write_text(_markdown(base, table, teachers), results_dir / "curve.md")
    _plot(table, teachers, results_dir / "curve.png")
    return dict(table=table, summary=table.to_string(index=False, float_format=lambda x: f"{x:.1f}")
                + f"\n\ncurve: {results_dir}/curve.{{csv,md,png}}")


def _markdown(base: EvidenceConfig, table: pd.DataFrame, teachers: pd.DataFrame) -> str:
    refs = teachers[~teachers.teacher.str.endswith("_random")]
    return "\n".join([f"# Learning curve (`{base.name}`): the default student, seed {base.seeds[0]}\n",
                      f"Batch {base.batch_size}, warm-up {base.warmup_steps} steps then cosine to 0; each row its own "
                      "run. Scores in % (dense: mIoU).\n",
                      table.astype({"steps": str, "images": str}).to_markdown(index=False, floatfmt=".1f"),
                      "\n## References: the real teachers' own features and the raw pixels\n",
                      refs.drop(columns=["teacher"]).to_markdown(index=False, floatfmt=".1f"), ""])


def _plot(table: pd.DataFrame, teachers: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = [p for p in ("linear", "knn", "dense") if f"default_{p}" in table]
    fig, axes = plt.subplots(1, len(probes), figsize=(5.5 * len(probes), 4.5))
    for ax, probe in zip(list(axes) if len(probes) > 1 else [axes], probes):
        ax.plot(table["images"], table[f"default_{probe}"], "o-", label="default student")
        ax.axhline(table[f"random_init_{probe}"].iloc[0], color="grey", ls=":", label="untrained")
        for row, color in zip(teachers[~teachers.teacher.str.endswith("_random")].itertuples(),
                              ("tab:red", "tab:purple", "tab:brown", "black")):
            if probe in teachers and pd.notna(getattr(row, probe)):
                ax.axhline(getattr(row, probe), color=color, ls="--", lw=1, label=row.teacher)
        ax.set_xscale("log")
        ax.set_xlabel("distillation images per student")
        ax.set_ylabel({"dense": "mIoU %"}.get(probe, "accuracy %"))
        ax.set_title(probe)
    axes_list = list(axes) if len(probes) > 1 else [axes]
    axes_list[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
