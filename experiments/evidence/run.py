"""Run the evidence experiment: units of work on worker processes, progress bars, the report.

:func:`run_evidence` writes the teacher files once, runs every unit whose result is not stored
yet (:mod:`experiments.evidence.units`) — in this process with ``workers=1``, else on ``workers``
processes (``python -m experiments.evidence.worker``, ``threads`` torch threads each), which claim
units through file locks — shows one progress bar per worker, then writes the tables, page and
figure (:mod:`experiments.evidence.report`) and returns the summary. Full logs go to
``<work_dir>/<preset>/logs/``. A re-run reuses every finished unit and resumes a half-trained one.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from comad.io import atomic_write_json
from comad.repo import REPO_ROOT
from .config import EvidenceConfig
from .data import FASHION_MNIST_DIR, load_fashion_mnist
from .report import summary_text, write_report
from .teachers import prepare_teachers
from .units import load_result, run_unit, unit_names

__all__ = ["run_evidence", "work_units", "config_from_json", "device_name", "default_results_dir", "parse_overrides"]

def device_name(device: str) -> str:
    """``'AMD EPYC ... (2 cores)'`` or the CUDA device's name, for the report."""
    if device.startswith("cuda"):
        import torch

        return torch.cuda.get_device_name(0)
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model} ({os.cpu_count()} cores)"


def default_results_dir(preset: str, repo: Path = REPO_ROOT) -> Path:
    """``results/evidence`` for the CPU run, ``results/evidence/<preset>`` for the others."""
    return repo / "results" / "evidence" / ("" if preset == "cpu" else preset)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``['steps=50', 'seeds=0,1,2']`` -> ``{'steps': 50, 'seeds': (0, 1, 2)}`` (typed like the fields).

    Raises:
        ValueError: not ``FIELD=VALUE``, an unknown field, or a value of the wrong type (named).
    """
    fields = {f.name: f for f in dataclasses.fields(EvidenceConfig)}
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}")
        default = getattr(EvidenceConfig("x"), key)
        try:
            if isinstance(default, tuple):
                out[key] = tuple(type(default[0])(v) for v in value.split(","))
            elif isinstance(default, dict):
                out[key] = json.loads(value)
            else:
                out[key] = type(default)(value)
        except (ValueError, json.JSONDecodeError) as e:
            raise ValueError(f"--set {item!r}: {e}") from None
    return out


def config_from_json(path: str | os.PathLike) -> EvidenceConfig:
    """The :class:`EvidenceConfig` a run wrote to ``config.json`` (lists back to tuples)."""
    d = json.loads(Path(path).read_text())
    types = {f.name: f.type for f in dataclasses.fields(EvidenceConfig)}
    return EvidenceConfig(**{k: tuple(v) if isinstance(v, list) and "tuple" in str(types[k]) else v
                             for k, v in d.items()})


def _progress_writer(path: Path, unit: str) -> Callable[[str, int, int], None]:
    def write(phase: str, done: int, total: int) -> None:
        atomic_write_json(dict(unit=unit, phase=phase, done=done, total=total, time=time.time()), path)
    return write


def work_units(cfg: EvidenceConfig, run_dir: Path, files: dict[str, Path], progress_file: Path | None = None,
               on_progress: Callable[[str, str, int, int], None] | None = None) -> list[str]:
    """Run every unit not done yet that no other worker holds (a lock per unit); returns those run."""
    data = load_fashion_mnist(cfg.data_root or FASHION_MNIST_DIR, train_per_class=cfg.probe_train_per_class,
                              test_per_class=cfg.probe_test_per_class, split_seed=cfg.split_seed)
    locks = run_dir / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    ran = []
    for unit in unit_names(cfg):
        fd = os.open(locks / f"{unit}.lock", os.O_RDWR | os.O_CREAT, 0o644)  # a lock, never written
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another worker runs it
            if load_result(cfg, run_dir, unit) is not None:
                continue
            progress = _progress_writer(progress_file, unit) if progress_file is not None else None
            if on_progress is not None:
                progress = lambda phase, done, total, u=unit: on_progress(u, phase, done, total)  # noqa: E731
            run_unit(cfg, unit, files, data, run_dir, progress)
            ran.append(unit)
        finally:
            os.close(fd)
    return ran


def _spawn(cfg: EvidenceConfig, run_dir: Path, work_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    env = dict(os.environ, OMP_NUM_THREADS=str(cfg.threads), MKL_NUM_THREADS=str(cfg.threads),
               PYTHONPATH=os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    procs = []
    for i in range(cfg.workers):
        log = run_dir / "logs" / f"worker{i}.log"
        # a log stream, appended across re-runs (not an output: the results are written atomically)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            cmd = [sys.executable, "-m", "experiments.evidence.worker", "--run-dir", str(run_dir), "--work-dir", str(work_dir),
                   "--index", str(i)]
            procs.append((subprocess.Popen(cmd, stdout=fd, stderr=subprocess.STDOUT, env=env, cwd=REPO_ROOT), log))
        finally:
            os.close(fd)
    return procs


def _watch(procs: list[tuple[subprocess.Popen, Path]], run_dir: Path, show: bool) -> None:
    """Progress bars from the workers' progress files until every worker has exited."""
    from tqdm import tqdm

    bars = [tqdm(total=1, position=i, desc=f"worker {i}", leave=True, disable=not show, dynamic_ncols=True)
            for i in range(len(procs))]
    shown: list[tuple[str, int] | None] = [None] * len(procs)
    while any(p.poll() is None for p, _ in procs):
        for i, bar in enumerate(bars):
            try:
                st = json.loads((run_dir / "progress" / f"worker{i}.json").read_text())
            except (OSError, ValueError):
                continue
            now = (f"worker {i} {st['unit']} {st['phase']}", int(st["total"]))
            if shown[i] != now:
                bar.reset(total=now[1])
                bar.set_description_str(now[0])
                shown[i] = now
            bar.n = st["done"]
            bar.refresh()
        time.sleep(1.0)
    for bar in bars:
        bar.close()


def _run_pending(cfg: EvidenceConfig, run_dir: Path, work_dir: Path, files: dict[str, Path], show: bool) -> None:
    pending = [u for u in unit_names(cfg) if load_result(cfg, run_dir, u) is None]
    if not pending:
        return
    for sub in ("logs", "progress"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    if cfg.workers <= 1:
        from tqdm import tqdm

        with tqdm(total=1, desc="evidence", disable=not show, dynamic_ncols=True) as bar:
            shown: list[tuple[str, int]] = []

            def step(unit: str, phase: str, done: int, total: int) -> None:
                if shown[-1:] != [(f"{unit} {phase}", total)]:
                    bar.reset(total=total)
                    bar.set_description_str(f"evidence {unit} {phase}")
                    shown.append((f"{unit} {phase}", total))
                bar.n = done
                bar.refresh()
            work_units(cfg, run_dir, files, on_progress=step)
        return
    procs = _spawn(cfg, run_dir, work_dir)
    try:
        _watch(procs, run_dir, show)
    finally:  # interrupted: stop our workers (a re-run resumes their units)
        for p, _ in procs:
            if p.poll() is None:
                p.terminate()
        for p, _ in procs:
            p.wait()
    failed = [(log, p.returncode) for p, log in procs if p.returncode]
    if failed:
        tails = "\n".join(f"--- {log} (exit {rc}):\n" + "\n".join(log.read_text(errors="replace").splitlines()[-15:])
                          for log, rc in failed)
        raise RuntimeError(f"evidence: {len(failed)} worker(s) failed; finished units are kept and a re-run resumes.\n{tails}")


def run_evidence(cfg: EvidenceConfig, work_dir: str | os.PathLike = "work_dirs/evidence",
                 results_dir: str | os.PathLike = "results/evidence", show: bool = True) -> dict[str, Any]:
    """Run (or finish) the evidence experiment ``cfg`` and write its report into ``results_dir``.

    Returns:
        dict(tables=..., summary=str, run_dir=Path).

    Raises:
        FileNotFoundError: a weights package or Fashion-MNIST is missing (experiments/evidence_setup.sh);
        RuntimeError: a worker failed (its log's tail is in the message).
    """
    work_dir = Path(work_dir)
    run_dir = work_dir / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(cfg.to_dict(), run_dir / "config.json")
    t0 = time.monotonic()
    files = prepare_teachers(cfg, work_dir)
    _run_pending(cfg, run_dir, work_dir, files, show)
    results = {u: load_result(cfg, run_dir, u) for u in unit_names(cfg)}
    missing = [u for u, r in results.items() if r is None]
    if missing:
        raise RuntimeError(f"evidence: units {missing} have no result in {run_dir / 'units'}; see {run_dir / 'logs'}")
    seeds = [r for u, r in results.items() if u.startswith("seed")]
    teachers = [r for u, r in results.items() if u.startswith("teachers")]
    unit_min = sum(sum(r["timing"].values()) for r in results.values()) / 60
    meta = dict(device=device_name(cfg.device), unit_minutes=unit_min, workers=cfg.workers, threads=cfg.threads,
                wall_min=(time.monotonic() - t0) / 60)
    tables = write_report(cfg, seeds, teachers, Path(results_dir), meta)
    atomic_write_json(meta, Path(results_dir) / "run.json")
    return dict(tables=tables, summary=summary_text(tables, Path(results_dir)), run_dir=run_dir)
