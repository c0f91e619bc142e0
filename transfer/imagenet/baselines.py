"""Baseline students described by ``benchmark_configs/baselines/*.py``.

Each file holds ``baseline = dict(name, kind, description, ...)`` with ``kind``:

- ``'distill'`` — ``_base_`` is a distillation ablation config (single teacher, naive mean);
  the file is itself a distill config: ``tools/distill.sh <file>``.
- ``'random'`` — ``_base_`` is the reference distill config; the student architecture
  (``model.student.arch``, a timm model name, at ``model.img_size``) is exported at timm's
  random initialisation by ``tools/export_random_student.py``.
- ``'checkpoint'`` — ``checkpoint``: any timm ViT state dict a user supplies (e.g. DeiT-Tiny),
  evaluated directly (its arch is inferred from shapes).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from comad.export import export_student
from comad.repo import REPO_ROOT

__all__ = ["BASELINE_DIR", "KINDS", "read_baseline", "build_random_student", "export_random_student"]

BASELINE_DIR = REPO_ROOT / "benchmark_configs" / "baselines"
KINDS = ("distill", "random", "checkpoint")


def read_baseline(path: str | Path) -> tuple[dict[str, Any], Config]:
    """(the ``baseline`` dict, the whole config) of a baseline file; errors name the file and key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"baseline config {path}: no such file (baselines live in {BASELINE_DIR})")
    cfg = Config.fromfile(str(path))
    if "baseline" not in cfg:
        raise KeyError(f"baseline config {path}: no 'baseline' dict")
    b = dict(cfg.baseline)
    for key in ("name", "kind", "description"):
        if not b.get(key):
            raise KeyError(f"baseline config {path}: 'baseline.{key}' is missing or empty")
    if b["kind"] not in KINDS:
        raise ValueError(f"baseline config {path}: baseline.kind {b['kind']!r} is not one of {KINDS}")
    if b["kind"] in ("distill", "random") and "model" not in cfg:
        raise KeyError(f"baseline config {path}: kind {b['kind']!r} needs a distill config as _base_ (no 'model' key)")
    if b["kind"] == "checkpoint" and not b.get("checkpoint"):
        raise KeyError(f"baseline config {path}: kind 'checkpoint' needs 'baseline.checkpoint'")
    return b, cfg


def build_random_student(cfg: Config, seed: int) -> torch.nn.Module:
    """The distill config's student (``model.student.arch`` at ``model.img_size``), timm init, seeded."""
    import timm

    arch = cfg.model.student.arch
    torch.manual_seed(seed)
    return timm.create_model(arch, pretrained=False, num_classes=0, img_size=cfg.model.get("img_size", 224))


def export_random_student(config: str | Path, out_dir: str | Path, seed: int | None = None) -> Path:
    """Export the random-init baseline of ``config`` with :func:`comad.export.export_student`."""
    b, cfg = read_baseline(config)
    if b["kind"] != "random":
        raise ValueError(f"baseline config {config}: kind is {b['kind']!r}, export_random_student needs 'random'")
    seed = int(b.get("seed", 0) if seed is None else seed)
    vit = build_random_student(cfg, seed)
    meta = dict(baseline=b["name"], kind="random", seed=seed, config=str(config), timm_arch=cfg.model.student.arch)
    return export_student(vit, out_dir, meta=meta)
