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

The dense probe's mIoU is not a mean over images: for it each resample reweights the test
scenes' per-class intersection and union counts (:func:`paired_bootstrap_miou`), with the same
two intervals and the same rules.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import pandas as pd

from .dense import decode, iou_counts
from .designs import CONDITIONS, DIFFERENCES, Condition, Difference

__all__ = ["PROBES", "probes_of", "correct_matrix", "iou_matrix", "scores_table", "paired_bootstrap",
           "paired_bootstrap_miou", "differences_table", "gates_table"]

PROBES = ("linear", "knn", "dense")


def probes_of(seed_units: list[dict[str, Any]]) -> tuple[str, ...]:
    """The probes the units hold (``dense`` only where the run had the dense probe)."""
    entry = next(iter(seed_units[0]["entries"].values())) if seed_units else {}
    return tuple(p for p in PROBES if p in entry)


def correct_matrix(units: Iterable[dict[str, Any]], condition: str, probe: str) -> tuple[list[int], np.ndarray]:
    """(seeds, (S, N) bool): per-image correctness of ``condition`` under ``probe`` in each seed unit."""
    seeds, rows = [], []
    for res in sorted(units, key=lambda r: int(r["unit"][4:])):
        seeds.append(int(res["unit"][4:]))
        rows.append(np.frombuffer(res["entries"][condition][f"{probe}_correct"].encode(), dtype=np.uint8) == ord("1"))
    return seeds, np.stack(rows)


def iou_matrix(units: Iterable[dict[str, Any]], condition: str, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per seed, test scene and class the dense probe's intersection and union counts: two (S, N, C) arrays."""
    inter, union = zip(*(iou_counts(decode(res["entries"][condition]["dense_pred"], labels.shape[1]), labels)
                         for res in sorted(units, key=lambda r: int(r["unit"][4:]))))
    return np.stack(inter), np.stack(union)


def _miou_rows(inter: np.ndarray, union: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """mIoU (percent) of (N, C) counts under each row of scene weights (R, N): (R,); classes absent
    from a resample are left out of its mean."""
    i, u = weights @ inter, weights @ union  # (R, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 100.0 * np.nanmean(np.where(u > 0, i / u, np.nan), axis=1)


def scores_table(seed_units: list[dict[str, Any]], conditions: tuple[Condition, ...] = CONDITIONS,
                 labels: np.ndarray | None = None) -> pd.DataFrame:
    """One row per condition: mean and std over seeds of each probe's score (accuracy, or mIoU for
    the dense probe given the test scenes' ``labels``), and the per-seed values."""
    rows = []
    for cond in conditions:
        row: dict[str, Any] = dict(condition=cond.name, label=cond.label, teachers="+".join(cond.teachers) or "-",
                                   gating=cond.gating if cond.teachers else "-", align=cond.align if cond.teachers else "-")
        for probe in probes_of(seed_units):
            if probe == "dense":
                inter, union = iou_matrix(seed_units, cond.name, labels)
                acc = np.array([_miou_rows(i, u, np.ones((1, len(i))))[0] for i, u in zip(inter, union)])
            else:
                acc = 100.0 * correct_matrix(seed_units, cond.name, probe)[1].mean(1)
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


def paired_bootstrap_miou(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], replicates: int,
                          seed: int = 0) -> dict[str, Any]:
    """The mIoU difference (points) of two conditions' (S, N, C) intersection and union counts, with
    :func:`paired_bootstrap`'s two intervals: the scenes resampled (the same draw for every seed),
    then the seeds too."""
    (ia, ua), (ib, ub) = a, b
    s, n = ia.shape[:2]
    rng = np.random.default_rng(seed)
    ones = np.ones((1, n))
    per_seed = np.array([_miou_rows(ia[k], ua[k], ones)[0] - _miou_rows(ib[k], ub[k], ones)[0] for k in range(s)])
    w = np.stack([np.bincount(r, minlength=n) for r in rng.integers(0, n, size=(replicates, n))]).astype(np.float64)
    by_seed = np.stack([_miou_rows(ia[k], ua[k], w) - _miou_rows(ib[k], ub[k], w) for k in range(s)])  # (S, R)
    ci = np.percentile(by_seed.mean(0), [2.5, 97.5])
    v = np.stack([np.bincount(r, minlength=s) for r in rng.integers(0, s, size=(replicates, s))])  # (R, S)
    w2 = np.stack([np.bincount(r, minlength=n) for r in rng.integers(0, n, size=(replicates, n))]).astype(np.float64)
    two = np.stack([_miou_rows(ia[k], ua[k], w2) - _miou_rows(ib[k], ub[k], w2) for k in range(s)])  # (S, R)
    two = (v.T * two).sum(0) / s
    return dict(diff=float(per_seed.mean()), ci_low=float(ci[0]), ci_high=float(ci[1]),
                ci_seeds_low=float(np.percentile(two, 2.5)), ci_seeds_high=float(np.percentile(two, 97.5)),
                per_seed=" ".join(f"{x:+.1f}" for x in per_seed),
                same_sign=bool((per_seed > 0).all() or (per_seed < 0).all()))


def differences_table(seed_units: list[dict[str, Any]], replicates: int,
                      differences: tuple[Difference, ...] = DIFFERENCES, labels: np.ndarray | None = None) -> pd.DataFrame:
    """One row per (comparison of ``differences``, probe) with its intervals and verdicts."""
    rows = []
    for k, d in enumerate(differences):
        for j, probe in enumerate(probes_of(seed_units)):
            if probe == "dense":
                r = paired_bootstrap_miou(iou_matrix(seed_units, d.a, labels), iou_matrix(seed_units, d.b, labels),
                                          replicates, seed=1000 * k + j)
            else:
                _, ca = correct_matrix(seed_units, d.a, probe)
                _, cb = correct_matrix(seed_units, d.b, probe)
                r = paired_bootstrap(ca.astype(np.float64) - cb.astype(np.float64), replicates, seed=1000 * k + j)
            significant = r["ci_low"] > 0 or r["ci_high"] < 0
            robust = significant and (r["ci_seeds_low"] > 0 or r["ci_seeds_high"] < 0) and r["same_sign"]
            rows.append(dict(a=d.a, b=d.b, question=d.question, claim=d.claim, probe=probe, **r,
                             significant=significant, robust=robust))
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
