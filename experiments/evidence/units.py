"""Units of work of the evidence run and their stored results (what a re-run reuses).

- ``seed<s>-<group>``: train the conditions of ``group`` for seed ``s`` in lockstep
  (:func:`~experiments.evidence.train.train_seed`), then probe each student (and, in the group
  that lists it, the seed's random-init student);
- ``teachers-real`` / ``teachers-random``: probe the teachers' own frozen features (and, with the
  real ones, the raw pixels), once per evaluation setup (shared by runs that differ in training).

A unit's result is ``<run_dir>/units/<unit>.json``, written atomically when the unit is done and
reused while its fingerprint (the configuration the results depend on) is unchanged. The files
are small (per-image correctness as '0'/'1' strings, per-patch dense predictions, gate
statistics, the fingerprint): results/evidence/<preset>/units/ keeps a copy of each finished one,
so that a run on another machine reuses them (:func:`~experiments.evidence.run.run_evidence`).
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
from .dense import Scenes, dense_probe, encode, make_scenes, patch_pixels
from .probe import pixel_features, probe_all, student_features, teacher_features
from .teachers import SharedTeachers, spec_of
from .train import train_seed

__all__ = ["unit_names", "seed_unit", "result_path", "load_result", "run_unit", "merge_seeds", "dense_scenes"]

Progress = Callable[[str, int, int], None]
_EVAL_FIELDS = ("img_size", "patch_size", "teachers", "probe_train_per_class", "probe_test_per_class", "probe_c",
                "probe_max_iter", "knn_k", "knn_temperature", "split_seed", "device", "dense_train_scenes",
                "dense_test_scenes", "dense_items", "dense_c", "dense_max_iter")


def seed_unit(seed: int, group: str) -> str:
    return f"seed{seed}-{group}"


def unit_names(cfg: EvidenceConfig) -> list[str]:
    """Every unit of a run, the seeds' first (the longest), so that workers finish together."""
    return [seed_unit(s, g) for s in cfg.seeds for g in cfg.groups] + ["teachers-real", "teachers-random"]


def _fingerprint(cfg: EvidenceConfig, unit: str) -> str:
    # the teachers' probes do not depend on the training; a seed's results depend on everything
    return cfg.fingerprint(*_EVAL_FIELDS) if unit.startswith("teachers") else cfg.fingerprint()


def result_path(cfg: EvidenceConfig, run_dir: Path, unit: str) -> Path:
    """Where a unit's result is: ``<run_dir>/units/<unit>.json``; the teachers' probes, which do not
    depend on the training, once per evaluation setup for every run of the work dir
    (``<work_dir>/teacher-units/<fingerprint>/``), so that runs that differ in training share them."""
    if unit.startswith("teachers"):
        return Path(run_dir).parent / "teacher-units" / _fingerprint(cfg, unit) / f"{unit}.json"
    return Path(run_dir) / "units" / f"{unit}.json"


def load_result(cfg: EvidenceConfig, run_dir: Path, unit: str) -> dict[str, Any] | None:
    """The stored result of ``unit`` if it was made with this configuration, else None."""
    try:
        res = json.loads(result_path(cfg, run_dir, unit).read_text())
    except (OSError, ValueError):
        return None
    return res if res.get("fingerprint") == _fingerprint(cfg, unit) else None


def merge_seeds(results: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The seed units of a run as one entry per seed, ``dict(unit='seed<s>', entries={condition: ...})``."""
    seeds: dict[int, dict[str, Any]] = {}
    for unit, res in results.items():
        if unit.startswith("seed"):
            s = int(unit[4:].split("-", 1)[0])
            seeds.setdefault(s, dict(unit=f"seed{s}", entries={}))["entries"].update(res["entries"])
    return [seeds[s] for s in sorted(seeds)]


def dense_scenes(cfg: EvidenceConfig, data: FashionMNIST) -> tuple[Scenes, Scenes] | None:
    """The dense probe's fixed train and test scenes (None when the run has no dense probe)."""
    if not cfg.dense_train_scenes:
        return None
    make = lambda x, y, n, salt: make_scenes(x, y, n, cfg.img_size, cfg.patch_size, cfg.dense_items,  # noqa: E731
                                             cfg.split_seed * 1000 + salt)
    return (make(data.probe_train_x, data.probe_train_y, cfg.dense_train_scenes, 1),
            make(data.probe_test_x, data.probe_test_y, cfg.dense_test_scenes, 2))


def _probe(features: Callable[..., torch.Tensor], cfg: EvidenceConfig, data: FashionMNIST,
           scenes: tuple[Scenes, Scenes] | None) -> dict[str, Any]:
    """Linear and k-NN on the pooled feature of every probe image, the dense probe on the scenes' tokens."""
    feats = [features(x) for x in (data.probe_train_x, data.probe_test_x)]
    out = probe_all(feats[0], data.probe_train_y, feats[1], data.probe_test_y, cfg)
    if scenes is not None:
        tok = [features(s.images, tokens=True) for s in scenes]
        out.update(dense_probe(tok[0], scenes[0].labels, tok[1], scenes[1].labels, cfg.dense_c, cfg.dense_max_iter))
    return out


def _gate_summary(log: list[dict[str, Any]], name: str) -> dict[str, float]:
    """Mean of the logged gates / losses of condition ``name`` over the second half of training."""
    half = log[len(log) // 2:]
    keys = sorted({k for row in half for k in row if k.startswith(f"{name}/")})
    return {k.split("/", 1)[1]: sum(r[k] for r in half if k in r) / max(1, sum(k in r for r in half)) for k in keys}


def _probe_students(cfg: EvidenceConfig, group: str, ls: Any, log: list[dict[str, Any]], data: FashionMNIST,
                    progress: Progress | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    names = [c.name for c in cfg.conditions if c.group == group]
    scenes = dense_scenes(cfg, data)
    if progress is not None:
        progress("probe", 0, len(names))
    for i, name in enumerate(names):
        if name in ls.models:
            student, trained = ls.models[name].student, None
        else:  # the untrained student of this seed
            student = next(iter(ls.models.values())).student
            trained = {k: v.clone() for k, v in student.state_dict().items()}
            student.load_state_dict(ls.initial_student)
        out[name] = _probe(lambda x, tokens=False: student_features(student, x, cfg.img_size, device=cfg.device,
                                                                    tokens=tokens), cfg, data, scenes)
        if trained is not None:
            student.load_state_dict(trained)
        out[name]["train"] = _gate_summary(log, name) if name in ls.models else {}
        if progress is not None:
            progress("probe", i + 1, len(names))
    return out


def _probe_teachers(cfg: EvidenceConfig, files: dict[str, Path], data: FashionMNIST, real: bool,
                    progress: Progress | None) -> dict[str, Any]:
    from comad.distiller_options import input_stats

    loader, out = SharedTeachers(), {}
    keys = [teacher_key(s.name, real) for s in TEACHERS]
    mean, std = input_stats(None)
    scenes = dense_scenes(cfg, data)
    for i, key in enumerate(keys):
        spec = spec_of(key)
        t = loader(files[key], grid=cfg.grid, patch_size=None, precision="amp", input_mean=mean, input_std=std,
                   **({"num_heads": spec.num_heads} if spec.num_heads else {})).to(cfg.device)
        feats = lambda x, tokens=False: teacher_features(t, spec.layer, x, cfg.img_size, device=cfg.device,  # noqa: E731
                                                         tokens=tokens)
        out[key] = dict(_probe(feats, cfg, data, scenes), img_size=int(t.img_size), file=str(files[key]))
        if progress is not None:
            progress("probe", i + 1, len(keys))
    if real:
        px = [pixel_features(x) for x in (data.probe_train_x, data.probe_test_x)]
        out["pixels"] = probe_all(px[0], data.probe_train_y, px[1], data.probe_test_y, cfg)
        if scenes is not None:
            tok = [patch_pixels(s.images, cfg.patch_size) for s in scenes]
            out["pixels"].update(dense_probe(tok[0], scenes[0].labels, tok[1], scenes[1].labels, cfg.dense_c,
                                             cfg.dense_max_iter))
            out["dense_labels"] = encode(scenes[1].labels)
    return out


def run_unit(cfg: EvidenceConfig, unit: str, files: dict[str, Path], data: FashionMNIST, run_dir: Path,
             progress: Progress | None = None) -> dict[str, Any]:
    """Run one unit (unless its result is stored) and store its result; returns it. The unit runs
    on ``cfg.threads`` threads (torch's, and the BLAS / OpenMP pools numpy and scikit-learn use,
    through threadpoolctl); the caller's thread counts are restored afterwards."""
    from threadpoolctl import threadpool_limits

    done = load_result(cfg, run_dir, unit)
    if done is not None:
        return done
    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    try:
        with threadpool_limits(limits=cfg.threads):
            return _run_unit(cfg, unit, files, data, run_dir, progress)
    finally:
        torch.set_num_threads(before)


def _run_unit(cfg: EvidenceConfig, unit: str, files: dict[str, Path], data: FashionMNIST, run_dir: Path,
              progress: Progress | None) -> dict[str, Any]:
    t0 = time.monotonic()
    if unit.startswith("seed") and unit in unit_names(cfg):
        seed, group = unit[4:].split("-", 1)
        unit_dir = Path(run_dir) / "units" / unit
        unit_dir.mkdir(parents=True, exist_ok=True)
        ls, log = train_seed(cfg, int(seed), files, data, unit_dir, progress, group)
        t_train = time.monotonic() - t0
        entries = _probe_students(cfg, group, ls, log, data, progress)
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
    atomic_write_json(res, result_path(cfg, run_dir, unit))
    return res
