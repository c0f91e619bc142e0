"""Run the evidence experiment: units of work on a process pool, progress bars, the report.

:func:`run_evidence` writes the teacher files once, runs every unit whose result is not stored
yet (:mod:`experiments.evidence.units`) — in this process with ``workers=1``, else on a
``concurrent.futures.ProcessPoolExecutor`` of ``workers`` processes (``threads`` torch threads
each, each unit's output in ``logs/<unit>.log``) — shows a progress bar per running unit, then
writes the tables, page and figure (:mod:`experiments.evidence.report`) and returns the summary.
A re-run skips every unit whose result exists and resumes a half-trained one. Finished units are
also copied to ``<results_dir>/units/`` (small JSON files, committed with the results), and a run
starts by taking the ones there, so that it reuses them on any machine.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import multiprocessing
import os
import platform
import signal
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Callable

from comad.io import atomic_write_json, atomic_write_text
from comad.repo import REPO_ROOT

from .config import EvidenceConfig
from .data import FASHION_MNIST_DIR, load_fashion_mnist
from .report import summary_text, write_report
from .teachers import prepare_teachers
from .units import load_result, merge_seeds, result_path, run_unit, unit_names

__all__ = ["run_evidence", "Run", "run_jobs", "config_from_json", "device_name", "default_results_dir", "parse_overrides"]


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


def _load_data(cfg: EvidenceConfig):
    return load_fashion_mnist(cfg.data_root or FASHION_MNIST_DIR, train_per_class=cfg.probe_train_per_class,
                              test_per_class=cfg.probe_test_per_class, split_seed=cfg.split_seed)


def _unit_job(cfg: EvidenceConfig, unit: str, files: dict[str, Path], run_dir: Path) -> str:
    """One unit in a pool process: its output to ``logs/<unit>.log``, its progress to ``progress/<unit>.json``."""
    import threading

    import torch

    parent = os.getppid()

    def orphaned() -> None:  # the run was killed (SIGKILL included): stop, a re-run resumes this unit
        while os.getppid() == parent:
            time.sleep(5.0)
        os._exit(3)
    threading.Thread(target=orphaned, daemon=True).start()
    torch.set_num_threads(cfg.threads)
    progress_file = run_dir / "progress" / f"{unit}.json"

    def progress(phase: str, done: int, total: int) -> None:
        atomic_write_json(dict(unit=f"{run_dir.name} {unit}", phase=phase, done=done, total=total, time=time.time()),
                          progress_file)

    with open(run_dir / "logs" / f"{unit}.log", "a") as log, contextlib.redirect_stdout(log), \
            contextlib.redirect_stderr(log):
        print(f"unit {unit}: started, pid {os.getpid()}, {cfg.threads} torch thread(s)", flush=True)
        run_unit(cfg, unit, files, _load_data(cfg), run_dir, progress)
        print(f"unit {unit}: done", flush=True)
    return unit


def _bars(show: bool) -> Callable[[dict[str, tuple[str, int, int]]], None]:
    """A function that draws one tqdm bar per running unit from ``{unit: (phase, done, total)}``."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}
    shown: dict[str, tuple[str, int]] = {}

    def draw(state: dict[str, tuple[str, int, int]]) -> None:
        for unit in [u for u in bars if u not in state]:
            bars.pop(unit).close()
            shown.pop(unit, None)
        for unit, (phase, done, total) in state.items():
            bar = bars.get(unit)
            if bar is None:
                bar = bars[unit] = tqdm(total=total, desc=unit, disable=not show, dynamic_ncols=True, leave=False)
            if shown.get(unit) != (phase, total):
                bar.reset(total=total)
                bar.set_description_str(f"{unit} {phase}")
                shown[unit] = (phase, total)
            if bar.n != done:
                bar.n = done
                bar.refresh()
    return draw


#: one unit of work: its run's configuration, the unit, the run directory
Job = tuple[EvidenceConfig, str, Path]


def _run_in_process(jobs: list[Job], files: dict[str, Path], show: bool, on_done: Callable[[Job], None]) -> None:
    draw = _bars(show)
    for job in jobs:
        cfg, unit, run_dir = job
        run_unit(cfg, unit, files, _load_data(cfg), run_dir,
                 lambda phase, done, total, u=unit: draw({u: (phase, done, total)}))
        draw({})
        on_done(job)


def run_jobs(jobs: list[Job], files: dict[str, Path], workers: int, show: bool,
             on_done: Callable[[Job], None]) -> None:
    """The units ``jobs`` on ``workers`` processes (in this process when 1 or a single job); the
    finished ones are kept when one fails (RuntimeError naming it and its log)."""
    if workers <= 1 or len(jobs) <= 1:
        return _run_in_process(jobs, files, show, on_done)
    draw, failed = _bars(show), []
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a kill stops the workers too (below)
    try:
        futures: dict[Future, Job] = {pool.submit(_unit_job, cfg, u, files, rd): (cfg, u, rd) for cfg, u, rd in jobs}
        todo = set(futures)
        while todo:
            done, todo = wait(todo, timeout=1.0, return_when=FIRST_COMPLETED)
            for f in done:
                if f.exception() is not None:
                    failed.append((futures[f], f.exception()))
                else:
                    on_done(futures[f])
            draw({st["unit"]: (st["phase"], st["done"], st["total"]) for st in _progress(futures, todo)})
        draw({})
    except BaseException:  # interrupted: stop the workers (a re-run resumes their units)
        for p in list(getattr(pool, "_processes", {}).values()):
            p.terminate()
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True, cancel_futures=True)
    if failed:
        raise RuntimeError("evidence: " + "; ".join(f"unit {u} failed ({type(e).__name__}: {e}); see "
                                                    f"{rd / 'logs' / (u + '.log')}" for (_, u, rd), e in failed)
                           + ". Finished units are kept and a re-run resumes.")


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _progress(futures: dict[Future, Job], todo: set[Future]) -> list[dict[str, Any]]:
    out = []
    for f in todo:
        if f.running():
            _, unit, run_dir = futures[f]
            try:
                out.append(json.loads((run_dir / "progress" / f"{unit}.json").read_text()))
            except (OSError, ValueError):
                pass
    return out


class Run:
    """One evidence run's directories: ``run_dir`` (work, logs, per-unit state) and ``results_dir``."""

    def __init__(self, cfg: EvidenceConfig, work_dir: str | os.PathLike, results_dir: str | os.PathLike) -> None:
        self.cfg, self.results_dir = cfg, Path(results_dir)
        self.run_dir = Path(work_dir) / cfg.name
        for sub in ("logs", "progress", "units"):
            (self.run_dir / sub).mkdir(parents=True, exist_ok=True)
        atomic_write_json(cfg.to_dict(), self.run_dir / "config.json")
        for src in sorted((self.results_dir / "units").glob("*.json")):  # another machine's finished units
            if src.stem in unit_names(cfg) and load_result(cfg, self.run_dir, src.stem) is None:
                atomic_write_text(src.read_text(), result_path(cfg, self.run_dir, src.stem))

    def pending(self) -> list[Job]:
        return [(self.cfg, u, self.run_dir) for u in unit_names(self.cfg) if load_result(self.cfg, self.run_dir, u) is None]

    def keep(self, unit: str) -> None:
        """Copy a finished unit's small result file beside the results (atomically)."""
        atomic_write_text(result_path(self.cfg, self.run_dir, unit).read_text(), self.results_dir / "units" / f"{unit}.json")

    def report(self, wall_s: float, show_summary: bool = True) -> dict[str, Any]:
        """The tables, page and figure of a finished run; dict(tables=..., summary=str, run_dir=Path)."""
        cfg = self.cfg
        results = {u: load_result(cfg, self.run_dir, u) for u in unit_names(cfg)}
        missing = [u for u, r in results.items() if r is None]
        if missing:
            raise RuntimeError(f"evidence: units {missing} have no result in {self.run_dir / 'units'}; see "
                               f"{self.run_dir / 'logs'}")
        for unit in results:
            self.keep(unit)
        teachers = [r for u, r in results.items() if u.startswith("teachers")]
        unit_min = sum(sum(r["timing"].values()) for r in results.values()) / 60
        meta = dict(device=device_name(cfg.device), unit_minutes=unit_min, workers=cfg.workers, threads=cfg.threads,
                    wall_min=wall_s / 60)
        try:  # a report of reused units keeps the wall time of the invocation that computed them
            stored = json.loads((self.results_dir / "run.json").read_text())
            if stored.get("unit_minutes") == unit_min:
                meta.update(device=stored.get("device", meta["device"]), wall_min=stored["wall_min"])
        except (OSError, ValueError, KeyError):
            pass
        tables = write_report(cfg, merge_seeds(results), teachers, self.results_dir, meta)
        atomic_write_json(meta, self.results_dir / "run.json")
        return dict(tables=tables, summary=summary_text(tables, self.results_dir), run_dir=self.run_dir)


def run_evidence(cfg: EvidenceConfig, work_dir: str | os.PathLike = "work_dirs/evidence",
                 results_dir: str | os.PathLike = "results/evidence", show: bool = True) -> dict[str, Any]:
    """Run (or finish) the evidence experiment ``cfg`` and write its report into ``results_dir``.

    Returns:
        dict(tables=..., summary=str, run_dir=Path).

    Raises:
        FileNotFoundError: a weights package or Fashion-MNIST is missing (experiments/evidence_setup.sh);
        RuntimeError: a unit failed (named, with its log).
    """
    t0 = time.monotonic()
    run = Run(cfg, work_dir, results_dir)
    files = prepare_teachers(cfg, work_dir)
    run_jobs(run.pending(), files, cfg.workers, show, lambda job: run.keep(job[1]))
    return run.report(time.monotonic() - t0)
