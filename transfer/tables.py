"""The paper-style result table: every task's ``metrics.json`` + ``results/published.csv``.

A *run* is a task work dir: a folder holding ``metrics.json`` and/or mmengine-style logs
(``<run>/<timestamp>/vis_data/scalars.json``, JSON lines). Each run gets a status:

- ``ok`` — valid metrics and complete logs; the only runs that are counted;
- ``metrics-invalid`` — ``metrics.json`` unreadable or off-schema (half-written, wrong keys);
- ``no-metrics`` — logs but no ``metrics.json`` (still running, or crashed);
- ``log-truncated`` — a ``scalars.json`` line is not JSON (half-written log);
- ``log-missing`` — ``metrics.json`` but no training log at all.

Every run that is not ``ok`` is listed (``runs.csv``, the warnings, and the ``status`` column
of its student's row) and left out of the means. Student rows group runs by
``(name, demo)`` (name: the record's ``name`` or the student's folder, see
:func:`transfer.metrics_io.student_name`); seeds of a row give mean ± sample std.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

from comad.io import atomic_open, atomic_write_text
from .metrics_io import MetricsError, read_metrics, record_name

__all__ = ["METRICS", "Run", "read_scalars", "inspect_run", "discover_runs", "load_published", "build_table",
           "format_table", "write_outputs", "make_tables"]

# (id, column label, task, metric key in that task's metrics.json)
METRICS: list[tuple[str, str, str, str]] = [
    ("in1k_ft", "IN-1K FT", "imagenet-ft", "top1"),
    ("in1k_linear", "linear", "imagenet-linear", "top1"),
    ("in1k_linear_cached", "linear (cached)", "imagenet-linear-cached", "top1"),
    ("in1k_knn", "k-NN", "imagenet-knn", "top1"),
    ("ade20k_miou", "ADE20K mIoU (UperNet, mmseg MAE recipe)", "ade20k", "mIoU"),
    ("ade20k_tinymim_miou", "ADE20K mIoU (UperNet, TinyMIM recipe)", "ade20k-tinymim", "mIoU"),
    ("ade20k_linear_miou", "ADE20K linear (frozen, DINOv2 lin.)", "ade20k-linear", "mIoU"),
    ("ade20k_linear4_miou", "ADE20K linear 4 blocks (frozen, DINOv2)", "ade20k-linear4", "mIoU"),
    ("coco_apb", "COCO APb (1x)", "coco", "bbox_mAP"),
    ("coco_apm", "COCO APm (1x)", "coco", "segm_mAP"),
    ("coco_lsj_apb", "COCO APb (ViTDet LSJ)", "coco-lsj", "bbox_mAP"),
    ("coco_lsj_apm", "COCO APm (ViTDet LSJ)", "coco-lsj", "segm_mAP"),
]
METRIC_IDS = [m[0] for m in METRICS]
LABELS = {m[0]: m[1] for m in METRICS}
PUBLISHED_COLUMNS = ("method", "arch", "metric", "value", "source", "protocol")


@dataclass
class Run:
    """One task work dir and what was found in it."""

    run_dir: Path
    status: str = "ok"
    problems: list[str] = field(default_factory=list)
    record: dict[str, Any] | None = None
    scalars: list[dict[str, Any]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return record_name(self.record) if self.record else f"? ({self.run_dir})"

    @property
    def task(self) -> str:
        return self.record["task"] if self.record else "?"


def read_scalars(path: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows of an mmengine ``scalars.json`` and the problems found (bad lines named by number)."""
    rows, problems = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            problems.append(f"{path}: line {i} is not JSON (half-written log)")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}: line {i} is not a JSON object")
            continue
        rows.append(row)
    return rows, problems


def inspect_run(run_dir: str | Path) -> Run:
    """Read a run's metrics and logs and decide its status (see the module doc)."""
    run = Run(Path(run_dir))
    statuses = []
    mpath = run.run_dir / "metrics.json"
    if mpath.is_file():
        try:
            run.record = read_metrics(mpath)
        except (MetricsError, OSError) as e:
            statuses.append("metrics-invalid")
            run.problems.append(str(e))
    else:
        statuses.append("no-metrics")
        run.problems.append(f"{run.run_dir}: no metrics.json (unfinished or crashed run)")
    stamps = sorted(d for d in run.run_dir.iterdir() if d.is_dir() and (d / "vis_data").is_dir()) if run.run_dir.is_dir() else []
    logs = [d / "vis_data" / "scalars.json" for d in stamps if (d / "vis_data" / "scalars.json").is_file()]
    if not logs:
        statuses.append("log-missing")
        run.problems.append(f"{run.run_dir}: no <timestamp>/vis_data/scalars.json training log")
    for log in logs:
        rows, problems = read_scalars(log)
        run.scalars.extend(rows)
        if problems:
            statuses.append("log-truncated")
            run.problems.extend(problems)
    order = ["metrics-invalid", "no-metrics", "log-truncated", "log-missing"]
    run.status = next((s for s in order if s in statuses), "ok")
    return run


def discover_runs(work_dirs: Iterable[str | Path]) -> list[Run]:
    """Every run (folder with ``metrics.json`` or a ``<ts>/vis_data`` log folder) under the work dirs."""
    found: set[Path] = set()
    for wd in work_dirs:
        wd = Path(wd)
        if not wd.is_dir():
            raise FileNotFoundError(f"work dir {wd}: no such folder")
        found.update(p.parent.resolve() for p in wd.rglob("metrics.json"))
        found.update(p.parent.parent.resolve() for p in wd.rglob("vis_data") if p.is_dir())
    return [inspect_run(d) for d in sorted(found)]


def load_published(path: str | Path) -> pd.DataFrame:
    """``published.csv`` (long format: method, arch, metric, value, source, protocol), checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"published numbers {path}: no such file")
    df = pd.read_csv(path, dtype={"value": float}, keep_default_na=False)
    missing = [c for c in PUBLISHED_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"published numbers {path}: missing columns {missing} (expected {list(PUBLISHED_COLUMNS)})")
    bad = sorted(set(df["metric"]) - set(METRIC_IDS))
    if bad:
        raise ValueError(f"published numbers {path}: unknown metric ids {bad} (expected one of {METRIC_IDS})")
    return df


def _row_label(name: str, demo: bool) -> str:
    return f"{name} (demo)" if demo else name


def _join(values: Iterable[Any]) -> str:
    return "; ".join(sorted({str(v) for v in values if v not in (None, "")}))


def _seed_values(name: str, ok: Sequence[Run], warnings: list[str]) -> dict[str, dict[int, tuple[str, float]]]:
    """Per metric id, per seed: (date, value) of the latest ok run (a duplicate is warned about)."""
    task_to_metric = {(t, k): mid for mid, _, t, k in METRICS}
    values: dict[str, dict[int, tuple[str, float]]] = {mid: {} for mid in METRIC_IDS}
    for r in ok:
        rec = r.record
        for key, v in rec["metrics"].items():
            mid = task_to_metric.get((rec["task"], key))
            if mid is None:
                continue
            prev = values[mid].get(rec["seed"])
            if prev is not None:
                warnings.append(f"[duplicate] {name} / {rec['task']} seed {rec['seed']}: several runs; keeping the "
                                f"latest ({max(prev[0], rec['date'])})")
                if prev[0] > rec["date"]:
                    continue
            values[mid][rec["seed"]] = (rec["date"], float(v))
    return values


def _student_row(name: str, demo: bool, members: Sequence[Run], warnings: list[str]) -> dict[str, Any]:
    """One student's row: mean, std and count over seeds per metric, status and provenance."""
    ok = [r for r in members if r.status == "ok"]
    values = _seed_values(name, ok, warnings)
    row: dict[str, Any] = dict(row=_row_label(name, demo), kind="student", name=name, demo=demo)
    for mid in METRIC_IDS:
        vals = np.array([v for _, v in values[mid].values()], dtype=float)
        row[mid] = float(vals.mean()) if vals.size else math.nan
        row[f"{mid}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else math.nan
        row[f"{mid}_n"] = int(vals.size)
    excluded = [r for r in members if r.status != "ok"]
    row["status"] = "ok" if not excluded else (
        f"{len(excluded)} run(s) excluded: " + ", ".join(sorted(f"{r.task}:{r.status}" for r in excluded)))
    recs = [r.record for r in ok]
    row["config"] = _join(Path(x["config"]).name for x in recs)
    row["git_rev"] = _join(x["git_rev"][:12] for x in recs)
    row["seeds"] = ",".join(str(s) for s in sorted({x["seed"] for x in recs}))
    row["date"] = max((x["date"] for x in recs), default="")
    row["source"] = _join(x["student"] for x in recs)
    row["protocol"] = _join(x.get("protocol", {}).get("name", "") for x in recs)
    return row


def _published_rows(published: pd.DataFrame) -> list[dict[str, Any]]:
    rows = []
    for method, g in published.groupby("method", sort=False):
        row = dict(row=method, kind="published", name=method, demo=False, status="published")
        for mid in METRIC_IDS:
            vals = g.loc[g["metric"] == mid, "value"]
            row[mid] = float(vals.iloc[0]) if len(vals) else math.nan
            row[f"{mid}_std"] = math.nan
            row[f"{mid}_n"] = int(len(vals))
        row.update(config="", git_rev="", seeds="", date="", source=_join(g["source"]),
                   protocol=_join(f"{LABELS[m]}: {p}" for m, p in zip(g["metric"], g["protocol"]) if p))
        row["arch"] = _join(g["arch"])
        rows.append(row)
    return rows


def _add_deltas(df: pd.DataFrame, baseline: str | None) -> None:
    if baseline is None:
        for mid in METRIC_IDS:
            df[f"{mid}_delta"] = math.nan
        return
    match = df[df["row"] == baseline]
    if match.empty:
        raise KeyError(f"baseline {baseline!r}: no such row; rows are {list(df['row'])}")
    base = match.iloc[0]
    for mid in METRIC_IDS:
        df[f"{mid}_delta"] = df[mid] - base[mid]


def build_table(runs: Sequence[Run], published: pd.DataFrame | None = None,
                baseline: str | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(numeric table, warnings). Columns per metric id: ``<id>``, ``<id>_std``, ``<id>_n``, ``<id>_delta``."""
    warnings = [f"[{r.status}] {r.name} / {r.task}: " + " | ".join(r.problems) for r in runs if r.status != "ok"]
    groups: dict[tuple[str, bool], list[Run]] = {}
    for r in runs:
        groups.setdefault((r.name, bool(r.record["demo"]) if r.record is not None else False), []).append(r)
    rows = [_student_row(name, demo, members, warnings) for (name, demo), members in sorted(groups.items())]
    rows += _published_rows(published) if published is not None else []
    df = pd.DataFrame(rows)
    if df.empty:
        return df, warnings
    _add_deltas(df, baseline)
    ordered = ["row", "kind", "name", "demo"] + [c for mid in METRIC_IDS for c in (mid, f"{mid}_std", f"{mid}_n", f"{mid}_delta")]
    rest = [c for c in df.columns if c not in ordered]
    return df[ordered + rest], warnings


def _cell(mean: float, std: float, n: int, delta: float) -> str:
    if math.isnan(mean):
        return "–"
    s = f"{mean:.2f}"
    if not math.isnan(std):
        s += f" ± {std:.2f}"
    if n > 1:
        s += f" (n={n})"
    if not math.isnan(delta):
        s += f" [{delta:+.2f}]"
    return s


def format_table(df: pd.DataFrame) -> pd.DataFrame:
    """Display table: one cell 'mean ± std (n) [Δ]' per metric that has any value, plus provenance."""
    used = [mid for mid in METRIC_IDS if df[mid].notna().any()] if not df.empty else []
    out = pd.DataFrame({"row": df["row"]}) if not df.empty else pd.DataFrame(columns=["row"])
    for mid in used:
        out[LABELS[mid]] = [_cell(r[mid], r[f"{mid}_std"], int(r[f"{mid}_n"]), r[f"{mid}_delta"]) for _, r in df.iterrows()]
    for col in ("demo", "seeds", "config", "git_rev", "date", "status"):
        if col in df:
            out[col] = ["yes" if v is True else "no" if v is False else v for v in df[col]]
    return out


def _markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False) + "\n"


def summary_markdown(df: pd.DataFrame) -> str:
    """The table for a terminal: rows and metric cells, demo flag, seeds and status (no provenance)."""
    shown = format_table(df)
    return _markdown(shown.drop(columns=[c for c in ("config", "git_rev", "date") if c in shown]))


def _savefig(fig: Any, path: Path) -> None:
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, bbox_inches="tight")


def _plots(df: pd.DataFrame, runs: Sequence[Run], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for mid in METRIC_IDS:
        sub = df[df[mid].notna()] if not df.empty else df
        if sub.empty:
            continue
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(sub) + 2), 3.5))
        colors = ["tab:blue" if k == "student" else "tab:gray" for k in sub["kind"]]
        ax.bar(range(len(sub)), sub[mid], yerr=sub[f"{mid}_std"].fillna(0), color=colors, capsize=3)
        ax.set_xticks(range(len(sub)), sub["row"], rotation=45, ha="right", fontsize=8)
        ax.set_ylabel(LABELS[mid])
        ax.set_title(f"{LABELS[mid]} (blue: our runs, mean ± std; gray: published)", fontsize=9)
        path = out / f"bar_{mid}.png"
        _savefig(fig, path)
        plt.close(fig)
        written.append(path)
    by_task: dict[str, list[Run]] = {}
    for r in runs:
        if r.scalars:
            by_task.setdefault(r.task, []).append(r)
    for task, rs in sorted(by_task.items()):
        keys = [k for k in ("loss", "lr") if any(k in row for r in rs for row in r.scalars)]
        if not keys:
            continue
        fig, axes = plt.subplots(1, len(keys), figsize=(5 * len(keys), 3.5), squeeze=False)
        for ax, key in zip(axes[0], keys):
            for r in rs:
                pts = [(row.get("step", row.get("iter", i)), row[key]) for i, row in enumerate(r.scalars) if key in row]
                if pts:
                    seed = r.record["seed"] if r.record else "?"
                    ax.plot(*zip(*pts), label=f"{r.name} s{seed}" + ("" if r.status == "ok" else f" [{r.status}]"))
            ax.set_xlabel("step")
            ax.set_ylabel(key)
            ax.legend(fontsize=7)
        fig.suptitle(f"training curves: {task}", fontsize=10)
        path = out / f"curves_{task}.png"
        _savefig(fig, path)
        plt.close(fig)
        written.append(path)
    return written


def write_outputs(df: pd.DataFrame, runs: Sequence[Run], warnings: Sequence[str], out: str | Path,
                  plots: bool = True) -> list[Path]:
    """Write results.csv, runs.csv, results.md, results.tex (+ PNGs) atomically into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with atomic_open(out / "results.csv", "w") as f:
        df.to_csv(f, index=False)
    written.append(out / "results.csv")
    run_rows = [dict(run_dir=str(r.run_dir), status=r.status, name=r.name, task=r.task,
                     seed=r.record["seed"] if r.record else "", demo=r.record["demo"] if r.record else "",
                     config=r.record["config"] if r.record else "", git_rev=r.record["git_rev"] if r.record else "",
                     date=r.record["date"] if r.record else "",
                     metrics=json.dumps(r.record["metrics"], sort_keys=True) if r.record else "",
                     problems=" | ".join(r.problems)) for r in runs]
    with atomic_open(out / "runs.csv", "w") as f:
        pd.DataFrame(run_rows, columns=["run_dir", "status", "name", "task", "seed", "demo", "config", "git_rev", "date",
                                        "metrics", "problems"]).to_csv(f, index=False, quoting=csv.QUOTE_MINIMAL)
    written.append(out / "runs.csv")
    shown = format_table(df)
    md = ["# Results", "", "Cells: mean ± sample std over seeds (n = seeds) [difference to the baseline row]. "
          "Published numbers come from `results/published.csv` (sources and protocols there).", "", _markdown(shown)]
    if len(df):
        prot = df[["row", "protocol"]][df["protocol"].astype(bool)]
        if len(prot):
            md += ["## Protocols", ""] + [f"- **{r}**: {p}" for r, p in prot.itertuples(index=False)] + [""]
    md += ["## Warnings", ""] + ([f"- {w}" for w in warnings] if warnings else ["- none"]) + [""]
    atomic_write_text("\n".join(md), out / "results.md")
    written.append(out / "results.md")
    atomic_write_text(shown.to_latex(index=False, escape=True), out / "results.tex")
    written.append(out / "results.tex")
    if plots:
        written += _plots(df, runs, out)
    return written


def make_tables(work_dirs: Sequence[str | Path], out: str | Path, published: str | Path | None = None,
                baseline: str | None = None, plots: bool = True) -> tuple[pd.DataFrame, list[str], list[Path]]:
    """Discover runs, build the table, write every output; returns (table, warnings, files)."""
    runs = discover_runs(work_dirs)
    pub = load_published(published) if published is not None else None
    df, warnings = build_table(runs, pub, baseline)
    files = write_outputs(df, runs, warnings, out, plots=plots)
    return df, warnings, files
