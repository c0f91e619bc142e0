"""The release of a dense task (:mod:`comad.release`): the trained segmentor / detector for stock mmseg / mmdet.

:func:`release_config` turns the run's config into one that builds the model from the
architecture alone and that stock OpenMMLab code runs: the student file (``init_cfg``), the
resume / ``load_from`` settings, the work dir and what only this project registers (the
``atomic_local`` checkpoint backend, :class:`~transfer.resume.ExactResumeHook`, the console
hook) are removed, and the data root goes back to the benchmark's ``data/`` layout. The
checkpoint holds the weights and ``meta['dataset_meta']`` (classes, palette), which
``mmseg.apis.init_model`` / ``mmdet.apis.init_detector`` read. Test-time settings (image scale,
slide inference, ``test_cfg``) are the run's, so the release predicts what the run's test did.
"""
from __future__ import annotations

import copy
from typing import Any

from mmengine.config import Config

from .metrics_io import student_name
from .runner import TaskRequest
from comad.release import Release
from comad.repo import repo_relative

from .cfg import set_data_root

__all__ = ["release_config", "release_name", "mm_release", "PROJECT_ONLY_HOOKS"]

#: Hooks only this project registers: a release config runs without them.
PROJECT_ONLY_HOOKS = ("ExactResumeHook", "ComadProgressHook")


def release_name(task: Any, request: TaskRequest) -> str:
    """``<config stem>_<student name>`` of a :class:`~transfer.mm_runner.MMTask` run (a demo: its demo config's stem)."""
    return f"{task.config_for(request).stem}_{student_name(request.student)}"


def release_config(cfg: Config, benchmark: Config) -> Config:
    """A copy of the run's ``cfg`` that builds from the architecture alone (see the module docstring)."""
    out = Config(copy.deepcopy(cfg._cfg_dict.to_dict()))
    backbone = out.model.backbone
    backbone.student = None
    backbone.init_cfg = None
    for key in ("work_dir", "experiment_name"):
        out.pop(key, None)
    out.load_from = None
    out.resume = False
    out.launcher = "none"
    ck = out.get("default_hooks", {}).get("checkpoint")
    if ck is not None:
        ck.pop("backend_args", None)
    out.custom_hooks = [h for h in out.get("custom_hooks") or [] if h.get("type") not in PROJECT_ONLY_HOOKS]
    set_data_root(out, str(benchmark.data_root))
    return out


def _header(task: Any, request: TaskRequest, ckpt_stem: str) -> str:
    return (f"# Release config of task {task.name}: {repo_relative(task.config_for(request))} as trained on {student_name(request.student)}"
            f"{' (DEMO run: not a benchmark result)' if request.demo else ''}.\n"
            f"# Weights: {ckpt_stem}-<sha8>.pth beside this file. The backbone builds from its architecture alone\n"
            f"# (no student file); stock use: mmseg.apis.init_model / mmdet.apis.init_detector(this file, weights).\n")


def _versions() -> dict[str, str]:
    import importlib

    out = {}
    for name in ("mmengine", "mmseg", "mmdet", "torch"):
        try:
            out[f"{name}_version"] = str(importlib.import_module(name).__version__)
        except ImportError:
            continue
    return out


def mm_release(task: Any, request: TaskRequest, cfg: Config, runner: Any, student_sha256: str) -> Release:
    """The trained model of ``runner`` (after test) as a :class:`~comad.release.Release`."""
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    benchmark = Config.fromfile(str(task.config_for(request)))
    name = release_name(task, request)
    rel_cfg = release_config(cfg, benchmark)
    bb = rel_cfg.model.backbone
    meta = dict(dataset_meta=dict(runner.test_dataloader.dataset.metainfo), task=task.name, iter=int(runner.iter),
                seed=int(cfg.randomness.seed), config=f"{name}.py",
                benchmark_config=repo_relative(task.config_for(request)),
                student=str(request.student), student_sha256=student_sha256, demo=bool(request.demo),
                arch={k: int(bb[k]) for k in ("patch_size", "embed_dim", "depth", "num_heads")}, **_versions())
    return Release(name=name, state_dict=model.state_dict(), meta=meta,
                   config_text=_header(task, request, name) + rel_cfg.pretty_text)
