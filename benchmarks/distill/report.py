"""The benchmark's outputs: the ratio columns, the printed table and profile summary, and
``benchmark_distill.{csv,json,txt}`` (each written atomically, so a cut run keeps its rows)."""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from comad.io import atomic_write_json, atomic_write_text

__all__ = ["COLUMNS", "TABLE", "OUTPUT_NAMES", "fill_ratios", "render_table", "render_profile", "write_outputs",
           "write_table"]

#: the CSV columns (the JSON rows hold these and ``per_step_ms``, ``warmup_s``, ``traceback``)
COLUMNS = ["row", "variant", "data", "batch", "steps", "status", "img_per_s", "ms_per_step", "ms_per_step_median",
           "img_per_s_median", "peak_mem_mib", "gflop_per_img", "tflops", "mfu", "b_over_a", "e2e_over_model",
           "b_over_a_median", "e2e_over_model_median", "note"]

#: the printed table: (row key, heading)
TABLE = [("variant", "variant"), ("data", "data"), ("batch", "B"), ("img_per_s", "img/s"), ("ms_per_step", "ms/step"),
         ("ms_per_step_median", "median ms"), ("peak_mem_mib", "peak MiB"), ("gflop_per_img", "GFLOP/img"),
         ("tflops", "TFLOP/s"), ("mfu", "MFU %"), ("b_over_a", "b/a"), ("e2e_over_model", "e2e/model"),
         ("b_over_a_median", "b/a med"), ("e2e_over_model_median", "e2e/m med"), ("status", "status")]
_LEFT = ("variant", "data", "status")

OUTPUT_NAMES = ("benchmark_distill.csv", "benchmark_distill.json", "benchmark_distill.txt")


def fill_ratios(rows: list[dict[str, Any]]) -> None:
    """Set the ratio columns of every row with throughput figures, from the mean and the median step.

    ``b_over_a``: against the naive row of the same batch and data path, or, for an end-to-end
    path the naive step does not run (``e2e-gpudecode``), the naive ``e2e`` row.
    ``e2e_over_model``: an end-to-end row against the model-only row of the same variant.
    """
    timed = [r for r in rows if r["status"] == "ok" and r.get("img_per_s") is not None
             and r.get("ms_per_step") is not None]  # rows of timed steps (not e.g. a decode-rate row)
    ok = {(r["variant"], r["data"], r["batch"]): r for r in timed}
    for r in rows:
        for k in ("b_over_a", "e2e_over_model", "b_over_a_median", "e2e_over_model_median"):
            r[k] = None
    for r in timed:
        refs = {}
        if r["variant"] != "naive":
            refs["b_over_a"] = ok.get(("naive", r["data"], r["batch"])) or (
                ok.get(("naive", "e2e", r["batch"])) if r["data"] != "model" else None)
        if r["data"] != "model":
            refs["e2e_over_model"] = ok.get((r["variant"], "model", r["batch"]))
        for k, ref in refs.items():
            if ref:
                r[k] = r["img_per_s"] / ref["img_per_s"]
                r[k + "_median"] = r["img_per_s_median"] / ref["img_per_s_median"]


def _fmt(v: Any, nd: int = 1) -> str:
    """Numbers for the table: ``nd`` decimals from 10 up, three significant digits below."""
    if v is None or v == "":
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:,.{nd}f}" if abs(v) >= 10 else f"{v:.3g}"
    return str(v)


def _cell(r: dict[str, Any], key: str) -> str:
    v = r.get(key)
    if key == "mfu":
        return _fmt(None if v is None else 100 * v, 1)
    return _fmt(v, 1)


def render_table(rows: list[dict[str, Any]], title: str) -> str:
    """The rows as a text table (rich when installed, else aligned plain text)."""
    heads = [h for _, h in TABLE]
    body = [[_cell(r, k) for k, _ in TABLE] for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
        lines = [title, "  ".join(h.ljust(w) for h, w in zip(heads, widths))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(b, widths)) for b in body]
        return "\n".join(lines) + "\n"
    t = Table(title=title)
    for key, h in TABLE:
        t.add_column(h, justify="left" if key in _LEFT else "right")
    for line in body:
        t.add_row(*line)
    buf = io.StringIO()
    Console(file=buf, width=200, force_terminal=False, color_system=None).print(t)
    return buf.getvalue()


def _profile_lines(v: str, p: dict[str, Any]) -> list[str]:
    if "error" in p:
        return [f"profile {v}: failed: {p['error'].strip().splitlines()[-1]}"]
    lines = [(f"profile {v} (B={p['batch']}): wall {p['wall_ms']:.1f} ms/step (under the profiler), GPU busy "
              f"{p['gpu_busy_ms']:.1f} ms ({100 * p['gpu_busy_ms'] / p['wall_ms']:.0f} %), "
              f"{p['kernels_per_step']} distinct kernels"),
             "  by class: " + ", ".join(f"{k} {ms:.1f}" for k, ms in sorted(p["by_class_ms"].items(), key=lambda kv: -kv[1]))]
    if "phases" in p:
        ph = p["phases"]
        if ph["gpu_ms"] is not None:
            lines.append("  phases GPU ms: " + ", ".join(f"{k} {ms:.1f}" for k, ms in ph["gpu_ms"].items()))
        lines.append("  phases host ms: " + ", ".join(f"{k} {ms:.1f}" for k, ms in ph["host_ms"].items()))
    lines += [f"    {ms:7.2f} ms  {name[:110]}" for name, ms in p["top_kernels_ms"][:6]]
    return lines


def render_profile(profiles: dict[str, dict[str, Any]]) -> str:
    """A few lines per profiled variant (the full numbers are in the JSON meta)."""
    return "\n".join(line for v, p in profiles.items() for line in _profile_lines(v, p))


def write_outputs(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """``benchmark_distill.csv`` (the :data:`COLUMNS`) and ``.json`` (meta and full rows)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    atomic_write_text(buf.getvalue(), out / OUTPUT_NAMES[0])
    atomic_write_json(dict(meta=meta, rows=rows), out / OUTPUT_NAMES[1])


def write_table(out: Path, table: str) -> None:
    """``benchmark_distill.txt``: the rendered table."""
    atomic_write_text(table, out / OUTPUT_NAMES[2])
