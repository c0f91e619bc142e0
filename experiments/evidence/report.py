"""The evidence run's outputs: CSV tables, a Markdown page, a PNG of the intervals, a one-screen summary."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from comad.io import atomic_open, atomic_write_text
from .config import TEACHERS, EvidenceConfig, teacher_key
from .dense import decode
from .designs import CLAIMS
from .stats import differences_table, gates_table, probes_of, scores_table

__all__ = ["teachers_table", "claims_table", "write_report", "summary_text"]

_PROBE_LABEL = {"linear": "linear", "knn": "k-NN", "dense": "dense mIoU"}


def teachers_table(teacher_units: list[dict[str, Any]]) -> pd.DataFrame:
    """The teachers' own probe scores (real and random weights) and the raw pixels."""
    entries = {k: v for res in teacher_units for k, v in res["entries"].items()}
    rows = []
    for spec in TEACHERS:
        for real in (True, False):
            e = entries.get(teacher_key(spec.name, real))
            if e is not None:
                rows.append(dict(teacher=teacher_key(spec.name, real), label=spec.label + ("" if real else ", random init"),
                                 input=f"{e['img_size']} px", dim=e["dim"], linear=e["linear"], knn=e["knn"],
                                 **({"dense": e["dense"]} if "dense" in e else {})))
    if "pixels" in entries:
        e = entries["pixels"]
        rows.append(dict(teacher="pixels", label="raw pixels (28 x 28; dense: each patch's pixels)", input="28 px",
                         dim=e["dim"], linear=e["linear"], knn=e["knn"], **({"dense": e["dense"]} if "dense" in e else {})))
    return pd.DataFrame(rows)


def _verdict(r: Any) -> str:
    return "robust" if r.robust else "significant" if r.significant else "n.s."


def _words(rows: pd.DataFrame) -> str:
    """The verdict of one comparison over its probes, in words."""
    sign = {p: ("+" if r["diff"] > 0 else "−") for p, r in rows.set_index("probe").iterrows()}
    robust = [p for p, r in rows.set_index("probe").iterrows() if r.robust]
    sig = [p for p, r in rows.set_index("probe").iterrows() if r.significant and not r.robust]
    if not robust and not sig:
        return "no difference found on any probe"
    parts = []
    for what, probes in (("robust", robust), ("significant, not robust", sig)):
        if probes:
            parts.append(f"{what}: " + ", ".join(f"{_PROBE_LABEL[p]} {sign[p]}" for p in probes))
    if robust and all(sign[p] == "+" for p in robust + sig) and len(robust) == len(rows):
        return "holds on every probe (robust)"
    return "; ".join(parts)


def claims_table(diffs: pd.DataFrame) -> pd.DataFrame:
    """One row per comparison: the claim it tests, a − b, each probe's difference with both
    intervals and its verdict, and the verdict in words (differences in points)."""
    rows = []
    for (claim, a, b, question), g in diffs.groupby(["claim", "a", "b", "question"], sort=False):
        row = dict(claim=f"{claim}: {CLAIMS.get(claim, '')}" if claim else "", comparison=f"{question} ({a} − {b})")
        for r in g.itertuples():
            row[_PROBE_LABEL[r.probe]] = (f"{r.diff:+.1f} [{r.ci_low:+.1f}, {r.ci_high:+.1f}] "
                                          f"[{r.ci_seeds_low:+.1f}, {r.ci_seeds_high:+.1f}] {_verdict(r)}")
        row["verdict"] = _words(g)
        rows.append(row)
    return pd.DataFrame(rows)


def _md_table(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False)


def _markdown(cfg: EvidenceConfig, scores: pd.DataFrame, diffs: pd.DataFrame, teachers: pd.DataFrame,
              meta: dict[str, Any]) -> str:
    probes = [p for p in ("linear", "knn", "dense") if f"{p}_mean" in scores]
    s = scores.assign(**{p: [f"{m:.1f} ± {sd:.1f}" for m, sd in zip(scores[f"{p}_mean"], scores[f"{p}_std"])]
                         for p in probes})
    main = s[["condition", "label", *probes, *(f"{p}_seeds" for p in probes)]]
    d = diffs.assign(ci=[f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(diffs.ci_low, diffs.ci_high)],
                     ci_seeds=[f"[{lo:+.1f}, {hi:+.1f}]" for lo, hi in zip(diffs.ci_seeds_low, diffs.ci_seeds_high)],
                     diff=[f"{x:+.1f}" for x in diffs["diff"]], verdict=[_verdict(r) for r in diffs.itertuples()])
    t = teachers.assign(**{p: [f"{x:.1f}" for x in teachers[p]] for p in probes if p in teachers})
    dense = (f" Dense: {cfg.dense_train_scenes} / {cfg.dense_test_scenes} scenes of {cfg.dense_items} items, a "
             f"per-patch logistic regression (C = {cfg.dense_c}) on the patch tokens, mIoU over 11 classes."
             if cfg.dense_train_scenes else "")
    head = (f"# Evidence run `{cfg.name}`{' (PILOT: not the evidence)' if cfg.name == 'pilot' else ''}\n\n"
            f"{len(cfg.seeds)} seeds x {sum(1 for c in cfg.conditions if c.teachers)} trained conditions (design "
            f"`{cfg.design}`); ViT student dim {cfg.student['embed_dim']}, depth {cfg.student['depth']}, {cfg.img_size} "
            f"px, patch {cfg.patch_size} ({cfg.grid}x{cfg.grid} grid), {cfg.steps} steps x {cfg.batch_size} = "
            f"{cfg.images_per_student} distillation images per student, {int(cfg.student_keep * 100)} % visible. Probes "
            f"on {10 * cfg.probe_train_per_class} / {10 * cfg.probe_test_per_class} fixed Fashion-MNIST train / test "
            f"images: logistic regression (C = {cfg.probe_c}) and {cfg.knn_k}-NN (T = {cfg.knn_temperature}) on the "
            f"mean patch token.{dense} Device: {meta.get('device', cfg.device)}; {_compute_text(meta)}.\n")
    claims = claims_table(diffs)
    return "\n".join([head, "## Claims: paired differences (points), `diff [ci] [ci_seeds] verdict`\n",
                      _md_table(claims) if not claims.empty else "",
                      "\n## Scores over seeds: mean ± std (accuracy %, dense: mIoU %)\n", _md_table(main),
                      "\n## Teachers' own features (same probes)\n",
                      _md_table(t[["label", "input", "dim", *[p for p in probes if p in t]]]),
                      "\n## Paired differences (points), 95 % bootstrap intervals\n",
                      "`ci`: test images resampled; `ci_seeds`: seeds resampled too. significant: `ci` excludes 0; "
                      "robust: `ci_seeds` excludes 0 too and every seed agrees in sign.\n",
                      _md_table(d[["question", "probe", "diff", "ci", "ci_seeds", "per_seed", "verdict"]]), ""])


def _gates_markdown(gates: pd.DataFrame) -> str:
    """The gate-weight section (empty without training logs)."""
    if gates.empty:
        return ""
    g = gates.assign(gate_shared=[f"{m:.3f} ± {sd:.3f}" for m, sd in zip(gates.gate_shared_mean, gates.gate_shared_std)])
    return "\n".join(["\n## What the gating did: shared-position weights, second half of training\n",
                      "`gate_shared_<teacher>`: a teacher's mean weight where every teacher saw the patch (1/K under "
                      "`mean`), averaged over the last half of the steps; mean ± std over seeds.\n",
                      _md_table(g[["condition", "gating", "align", "teacher", "gate_shared", "per_seed"]]), ""])


def _compute_text(meta: dict) -> str:
    """How long the run took: the work units' summed time, and this invocation's (it reuses finished units)."""
    unit, wall, workers = meta.get("unit_minutes", float("nan")), meta.get("wall_min", float("nan")), meta.get("workers", 1)
    return (f"{unit:.0f} min of work units (training and probes, summed) on {workers} worker(s) x "
            f"{meta.get('threads', 1)} torch thread(s); the invocation that wrote this page took {wall:.0f} min "
            f"(finished units are reused)")


def _plot(scores: pd.DataFrame, diffs: pd.DataFrame, teachers: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probes = list(diffs.probe.unique())
    height = max(6.5, 0.32 * max(len(scores), len(diffs) // max(1, len(probes))) + 2)
    fig, axes = plt.subplots(1, 1 + len(probes), figsize=(6.5 * (1 + len(probes)), height),
                             gridspec_kw=dict(width_ratios=[1.0] + [1.1] * len(probes)))
    y = range(len(scores))
    for off, probe, color in ((-0.2, "linear", "tab:blue"), (0.0, "knn", "tab:orange"), (0.2, "dense", "tab:green")):
        if f"{probe}_mean" in scores:
            axes[0].errorbar(scores[f"{probe}_mean"], [i + off for i in y], xerr=scores[f"{probe}_std"], fmt="o",
                             color=color, label=_PROBE_LABEL[probe], capsize=2)
    for row in teachers.itertuples():
        if not row.teacher.endswith("_random"):
            axes[0].axvline(row.linear, color="tab:blue", alpha=0.25, lw=1)
    axes[0].set_yticks(list(y), scores["condition"])
    axes[0].invert_yaxis()
    axes[0].set_xlabel("accuracy / mIoU % (mean ± std over seeds; lines: real teachers' own linear)")
    axes[0].legend(loc="lower right")
    for ax, probe in zip(axes[1:], probes):
        d = diffs[diffs.probe == probe].reset_index(drop=True)
        yy = range(len(d))
        ax.hlines(list(yy), d.ci_seeds_low, d.ci_seeds_high, color="grey", lw=1)
        ax.errorbar(d["diff"], list(yy), xerr=[d["diff"] - d.ci_low, d.ci_high - d["diff"]], fmt="none",
                    ecolor="black", capsize=3)
        colors = ["tab:green" if r else "tab:orange" if s else "black" for r, s in zip(d.robust, d.significant)]
        ax.scatter(d["diff"], list(yy), c=colors, zorder=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(list(yy), [f"{a} − {b}" for a, b in zip(d.a, d.b)])
        ax.invert_yaxis()
        ax.set_xlabel(f"{_PROBE_LABEL[probe]}: difference (points), 95 % CI (grey: seeds resampled too)\n"
                      "green: robust, orange: significant, black: not significant")
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


def write_report(cfg: EvidenceConfig, seed_units: list[dict[str, Any]], teacher_units: list[dict[str, Any]],
                 out_dir: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``evidence.csv``, ``differences.csv``, ``teachers.csv``, ``gates.csv``, ``evidence.md``,
    ``evidence.png`` into ``out_dir``; returns the tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {k: v for res in teacher_units for k, v in res["entries"].items()}
    labels = decode(entries["dense_labels"], cfg.grid ** 2) if "dense_labels" in entries else None
    scores = scores_table(seed_units, cfg.conditions, labels)
    diffs = differences_table(seed_units, cfg.bootstrap, cfg.differences, labels)
    teachers, gates = teachers_table(teacher_units), gates_table(seed_units, cfg.conditions)
    for df, name in ((scores, "evidence.csv"), (diffs, "differences.csv"), (teachers, "teachers.csv"),
                     (gates, "gates.csv"), (claims_table(diffs), "claims.csv")):
        with atomic_open(out_dir / name, "w") as f:
            df.to_csv(f, index=False, float_format="%.4f")
    atomic_write_text(_markdown(cfg, scores, diffs, teachers, meta) + _gates_markdown(gates), out_dir / "evidence.md")
    _plot(scores, diffs, teachers, out_dir / "evidence.png",
          f"CoMAD evidence ({cfg.name}): ViT student on Fashion-MNIST, {len(cfg.seeds)} seeds, "
          f"{cfg.images_per_student} images each")
    return dict(scores=scores, differences=diffs, teachers=teachers, gates=gates, probes=probes_of(seed_units))


def summary_text(tables: dict[str, Any], out_dir: Path) -> str:
    """The one-screen summary printed at the end."""
    s, d = tables["scores"], tables["differences"]
    probes = [p for p in ("linear", "knn", "dense") if f"{p}_mean" in s]
    lines = [f"{'condition':<20}" + "".join(f"{_PROBE_LABEL[p]:>15}" for p in probes)]
    lines += [f"{r['condition']:<20}" + "".join(f"{r[p + '_mean']:9.1f} ± {r[p + '_std']:3.1f}" for p in probes)
              for _, r in s.iterrows()]
    lines += ["", f"{'difference (points)':<36}" + "".join(f"{_PROBE_LABEL[p]:>16}" for p in probes)]
    for (a, b), g in d.groupby(["a", "b"], sort=False):
        g = g.set_index("probe")
        cells = [f"{g.loc[p, 'diff']:+6.1f} {_verdict(g.loc[p]):>9}" for p in probes]
        lines.append(f"{(a + ' - ' + b)[:35]:<36}" + "".join(f"{c:>16}" for c in cells))
    lines += ["", f"tables, page and figure: {out_dir}/evidence.{{csv,md,png}}, claims.csv"]
    return "\n".join(lines)
