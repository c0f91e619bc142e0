"""Scores, their spread over seeds, and paired bootstrap intervals of differences.

For conditions a and b, each seed s and each test image i give d[s, i] = correct_a[s, i] -
correct_b[s, i] (the same image, the same seed's data order, masks and init). The difference is
mean_s mean_i d[s, i] (percentage points). Two 95 % percentile intervals, both paired:

- ``ci``: the test images resampled with replacement (the same draw for every seed, since every
  seed is probed on the same images): the uncertainty from the finite test set, given these seeds;
- ``ci_seeds``: the seeds resampled too (two levels): adds the seed-to-seed variation of the
  training (coarse with 3-5 seeds).

A difference is called **significant** when ``ci`` excludes 0 and **robust** when ``ci_seeds``
excludes 0 as well and every seed's difference has the same sign. (Fixed before the run.)
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from .config import CONDITIONS, DIFFERENCES, Condition

__all__ = ["PROBES", "correct_matrix", "scores_table", "paired_bootstrap", "differences_table", "gates_table"]

PROBES = ("linear", "knn")


def correct_matrix(units: Iterable[dict[str, Any]], condition: str, probe: str) -> tuple[list[int], np.ndarray]:
    """(seeds, (S, N) bool): per-image correctness of ``condition`` under ``probe`` in each seed unit."""
    seeds, rows = [], []
    for res in sorted(units, key=lambda r: int(r["unit"][4:])):
        seeds.append(int(res["unit"][4:]))
        rows.append(np.frombuffer(res["entries"][condition][f"{probe}_correct"].encode(), dtype=np.uint8) == ord("1"))
    return seeds, np.stack(rows)


def scores_table(seed_units: list[dict[str, Any]], conditions: tuple[Condition, ...] = CONDITIONS) -> pd.DataFrame:
    """One row per condition: mean and std over seeds of each probe's accuracy, and the per-seed values."""
    rows = []
    for cond in conditions:
        row: dict[str, Any] = dict(condition=cond.name, label=cond.label, teachers="+".join(cond.teachers) or "-",
                                   gating=cond.gating if cond.teachers else "-", align=cond.align if cond.teachers else "-")
        for probe in PROBES:
            seeds, c = correct_matrix(seed_units, cond.name, probe)
            acc = 100.0 * c.mean(1)
            row[f"{probe}_mean"], row[f"{probe}_std"] = float(acc.mean()), float(acc.std(ddof=1)) if len(acc) > 1 else 0.0
            row[f"{probe}_seeds"] = " ".join(f"{a:.1f}" for a in acc)
        rows.append(row)
    return pd.DataFrame(rows)


def paired_bootstrap(d: np.ndarray, replicates: int, seed: int = 0) -> dict[str, Any]:
    """Difference (percentage points) and both intervals of a (S, N) paired difference matrix."""
    s, n = d.shape
    rng = np.random.default_rng(seed)
    per_image = d.mean(0)  # the seeds' mean per image
    images = rng.integers(0, n, size=(replicates, n))
    ci = np.percentile(100.0 * per_image[images].mean(1), [2.5, 97.5])
    seed_counts = np.stack([np.bincount(r, minlength=s) for r in rng.integers(0, s, size=(replicates, s))])
    image_counts = np.stack([np.bincount(r, minlength=n) for r in rng.integers(0, n, size=(replicates, n))])
    two = 100.0 * ((seed_counts @ d) * image_counts).sum(1) / (s * n)
    per_seed = 100.0 * d.mean(1)
    return dict(diff=float(100.0 * d.mean()), ci_low=float(ci[0]), ci_high=float(ci[1]),
                ci_seeds_low=float(np.percentile(two, 2.5)), ci_seeds_high=float(np.percentile(two, 97.5)),
                per_seed=" ".join(f"{x:+.1f}" for x in per_seed),
                same_sign=bool((per_seed > 0).all() or (per_seed < 0).all()))


def differences_table(seed_units: list[dict[str, Any]], replicates: int,
                      differences: tuple[tuple[str, str, str], ...] = DIFFERENCES) -> pd.DataFrame:
    """One row per (comparison of ``differences``, probe) with its intervals and verdicts."""
    rows = []
    for k, (a, b, question) in enumerate(differences):
        for j, probe in enumerate(PROBES):
            _, ca = correct_matrix(seed_units, a, probe)
            _, cb = correct_matrix(seed_units, b, probe)
            r = paired_bootstrap(ca.astype(np.float64) - cb.astype(np.float64), replicates, seed=1000 * k + j)
            significant = r["ci_low"] > 0 or r["ci_high"] < 0
            robust = significant and (r["ci_seeds_low"] > 0 or r["ci_seeds_high"] < 0) and r["same_sign"]
            rows.append(dict(a=a, b=b, question=question, probe=probe, **r, significant=significant, robust=robust))
    return pd.DataFrame(rows)


def gates_table(seed_units: list[dict[str, Any]], conditions: tuple[Condition, ...] = CONDITIONS) -> pd.DataFrame:
    """What the gating did: per multi-teacher condition and teacher, its ``gate_shared_<teacher>``
    (its weight where every teacher saw the patch) averaged over the second half of training — the
    ``train`` summary each seed unit stores — as mean and std over seeds. Under ``gating='mean'``
    it is 1/K by construction."""
    rows = []
    for cond in (c for c in conditions if len(c.teachers) > 1):
        for teacher in cond.teachers:
            key = f"gate_shared_{teacher}"
            per_seed = [float(r["entries"][cond.name]["train"][key])
                        for r in sorted(seed_units, key=lambda r: int(r["unit"][4:]))
                        if key in r["entries"].get(cond.name, {}).get("train", {})]
            if per_seed:
                rows.append(dict(condition=cond.name, gating=cond.gating, align=cond.align, teacher=teacher,
                                 gate_shared_mean=float(np.mean(per_seed)),
                                 gate_shared_std=float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else 0.0,
                                 per_seed=" ".join(f"{x:.3f}" for x in per_seed)))
    return pd.DataFrame(rows)
