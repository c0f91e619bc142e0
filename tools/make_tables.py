#!/usr/bin/env python
"""Gather every task's metrics.json into one table (CSV, Markdown, LaTeX) with plots.

    tools/make_tables.py WORK_DIR... [--out results/generated] [--baseline NAME]
                         [--published results/published.csv] [--no-plots] [--strict]

Rows: students (runs grouped by name and demo flag; mean ± std over seeds) and the published
methods of results/published.csv. Runs whose metrics or logs are missing or half-written are
listed as warnings and in a status column, never counted. See results/README.md.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from transfer.tables import make_tables, summary_markdown  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work_dirs", nargs="+", type=Path, help="work dirs to search (recursively) for task runs")
    p.add_argument("--out", type=Path, default=REPO / "results" / "generated", help="output folder")
    p.add_argument("--published", type=Path, default=REPO / "results" / "published.csv",
                   help="published numbers (long CSV); 'none' to leave them out")
    p.add_argument("--baseline", default=None, help="row to compute deltas against (a student name or a published method)")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--strict", action="store_true", help="exit with status 1 when any run is not ok")
    a = p.parse_args(argv)
    published = None if str(a.published).lower() == "none" else a.published
    df, warnings, files = make_tables(a.work_dirs, a.out, published=published, baseline=a.baseline, plots=not a.no_plots)
    n_students = int((df["kind"] == "student").sum()) if len(df) else 0
    print(summary_markdown(df))
    print(f"{n_students} student row(s), {len(df) - n_students} published row(s); wrote:")
    for f in files:
        print(f"  {f}")
    if warnings:
        print(f"{len(warnings)} warning(s) (runs not counted):", file=sys.stderr)
        for w in warnings:
            print(f"  {w}", file=sys.stderr)
    return 1 if (a.strict and warnings) else 0


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("make_tables", main)
