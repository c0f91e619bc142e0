"""Units of work of the evidence run and their stored results (what a re-run reuses).

- ``seed<s>``: train every condition of seed ``s`` in lockstep (:func:`~experiments.evidence.train.train_seed`),
  then probe each student and the seed's random-init student;
- ``teachers-real`` / ``teachers-random``: probe the teachers' own frozen features (and, with the
  real ones, the raw pixels), once per run.

A unit's result is ``<run_dir>/units/<unit>.json``, written atomically when the unit is done and
reused while its fingerprint (the configuration the results depend on) is unchanged.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import torch

from comad.io import atomic_write_json
from .config import TEACHERS, EvidenceConfig, teacher_key
from .data import FashionMNIST
from .probe import pixel_features, probe_all, student_features, teacher_features
from .teachers import SharedTeachers, spec_of
from .train import train_seed

__all__ = ["unit_names", "result_path", "load_result", "run_unit"]

Progress = Callable[[str, int, int], None]
_EVAL_FIELDS = ("img_size", "patch_size", "teachers", "probe_train_per_class", "probe_test_per_class", "probe_c",
                "probe_max_iter", "knn_k", "knn_temperature", "split_seed", "device")


def unit_names(cfg: EvidenceConfig) -> list[str]:
    """Every unit of a run, longest first (the seeds), so that two workers finish together."""
    return [f"seed{s}" for s in cfg.seeds] + ["teachers-real", "teachers-random"]


def _fingerprint(cfg: EvidenceConfig, unit: str) -> str:
    # the teachers' probes do not depend on the training; a seed's results depend on everything
    return cfg.fingerprint(*_EVAL_FIELDS) if unit.startswith("teachers") else cfg.fingerprint()


def result_path(run_dir: Path, unit: str) -> Path:
    return Path(run_dir) / "units" / f"{unit}.json"


def load_result(cfg: EvidenceConfig, run_dir: Path, unit: str) -> dict[str, Any] | None:
    """The stored result of ``unit`` if it was made with this configuration, else None."""
    try:
        res = json.loads(result_path(run_dir, unit).read_text())
    except (OSError, ValueError):
        return None
    return res if res.get("fingerprint") == _fingerprint(cfg, unit) else None


def _gate_summary(log: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Mean of the logged gates / losses of condition ``name`` over the second half of training."""
    half = log[len(log) // 2:]
    keys = sorted({k for row in half for k in row if k.startswith(f"{name}/")})
    return {k.split("/", 1)[1]: sum(r[k] for r in half if k in r) / max(1, sum(k in r for r in half)) for k in keys}


def _probe_students(cfg: EvidenceConfig, ls: Any, log: list[dict[str, Any]], data: FashionMNIST,
                    progress: Progress | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = [c.name for c in cfg.conditions]
    for i, name in enumerate(names):
        if name == "random_init":
            student = next(iter(ls.models.values())).student
            trained = {k: v.clone() for k, v in student.state_dict().items()}
            student.load_state_dict(ls.initial_student)
        else:
            student, trained = ls.models[name].student, None
        feats = [student_features(student, x, cfg.img_size, device=cfg.device)
                 for x in (data.probe_train_x, data.probe_test_x)]
        if trained is not None:
            student.load_state_dict(trained)
        out[name] = probe_all(feats[0], data.probe_train_y, feats[1], data.probe_test_y, cfg)
        out[name]["train"] = _gate_summary(log, name) if name != "random_init" else {}
        if progress is not None:
            progress("probe", i + 1, len(names))
    return out


def _probe_teachers(cfg: EvidenceConfig, files: dict[str, Path], data: FashionMNIST, real: bool,
                    progress: Progress | None) -> dict[str, Any]:
    from comad.distiller_options import input_stats

    loader, out = SharedTeachers(), {}
    keys = [teacher_key(s.name, real) for s in TEACHERS]
    mean, std = input_stats(None)
    for i, key in enumerate(keys):
        spec = spec_of(key)
        t = loader(files[key], grid=cfg.grid, patch_size=None, precision="amp", input_mean=mean, input_std=std,
                   **({"num_heads": spec.num_heads} if spec.num_heads else {})).to(cfg.device)
        feats = [teacher_features(t, spec.layer, x, cfg.img_size, device=cfg.device)
                 for x in (data.probe_train_x, data.probe_test_x)]
        out[key] = dict(probe_all(feats[0], data.probe_train_y, feats[1], data.probe_test_y, cfg),
                        img_size=int(t.img_size), file=str(files[key]))
        if progress is not None:
            progress("probe", i + 1, len(keys))
    if real:
        px = [pixel_features(x) for x in (data.probe_train_x, data.probe_test_x)]
        out["pixels"] = probe_all(px[0], data.probe_train_y, px[1], data.probe_test_y, cfg)
    return out


def run_unit(cfg: EvidenceConfig, unit: str, files: dict[str, Path], data: FashionMNIST, run_dir: Path,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run one unit (unless its result is stored) and store its result; returns it. The unit runs
    on ``cfg.threads`` torch threads; the caller's thread count is restored afterwards."""
    done = load_result(cfg, run_dir, unit)
    if done is not None:
        return done
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        return _run_unit(cfg, unit, files, data, run_dir, progress)
    finally:
        torch.set_num_threads(before)


def _run_unit(cfg: EvidenceConfig, unit: str, files: dict[str, Path], data: FashionMNIST, run_dir: Path,
              progress: Progress | None) -> dict[str, Any]:
    t0 = time.monotonic()
    if unit.startswith("seed"):
        seed = int(unit[4:])
        unit_dir = Path(run_dir) / "units" / unit
        unit_dir.mkdir(parents=True, exist_ok=True)
        ls, log = train_seed(cfg, seed, files, data, unit_dir, progress)
        t_train = time.monotonic() - t0
        entries = _probe_students(cfg, ls, log, data, progress)
        (unit_dir / "train_state.pth").unlink(missing_ok=True)
        atomic_write_json(log, unit_dir / "train_log.json")
        timing = dict(train_s=t_train, probe_s=time.monotonic() - t0 - t_train)
    elif unit in ("teachers-real", "teachers-random"):
        entries = _probe_teachers(cfg, files, data, unit == "teachers-real", progress)
        timing = dict(probe_s=time.monotonic() - t0)
    else:
        raise ValueError(f"evidence: unknown unit {unit!r}; expected one of {unit_names(cfg)}")
    res = dict(unit=unit, fingerprint=_fingerprint(cfg, unit), config=cfg.to_dict(), entries=entries, timing=timing,
               threads=torch.get_num_threads())
    atomic_write_json(res, result_path(run_dir, unit))
    return res
