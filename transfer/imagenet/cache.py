"""The feature caches of the cached protocols (``imagenet-linear-cached``, ``imagenet-knn``).

Features of centre crops (the config's ``features``) are extracted once from the frozen student into
``<work_dir>/../feature_cache/<key digest>/{train,val}/`` (or ``features.cache_dir``), shared by the
cached probe and k-NN of the same student and setting (:class:`~transfer.imagenet.features.FeatureCache`:
chunked, resumable, refused for another key). :func:`feature_cache_dirs` points the config at those
folders before the Runner is built; :func:`fill_feature_caches` extracts what is missing, logging to
the Runner's log, and checks the backbone unchanged.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config

from comad.checkpoint import load_vit
from ..runner import TaskRequest
from .data import count_images
from .features import FeatureCache, assert_backbone_unchanged, backbone_snapshot

__all__ = ["CACHED_TASKS", "feature_cache_dirs", "fill_feature_caches"]

CACHED_TASKS = ("imagenet-linear-cached", "imagenet-knn")


def _transform_spec(f: Any) -> dict[str, Any]:
    """The timm eval transform of ``cfg.features`` (a ``kind='timm'`` spec of :func:`comad.data.transforms.build_transform`)."""
    return dict(kind="timm", input_size=int(f.img_size), is_training=False, crop_pct=float(f.crop_pct),
                interpolation=f.interpolation, mean=list(f.mean), std=list(f.std))


def feature_cache_dirs(cfg: Config, request: TaskRequest, splits: dict[str, tuple[Path, int | None]],
                       classes: list[str], sha: str, arch: dict[str, int]) -> tuple[dict[str, Any], list[str]]:
    """Where this student's features go; the config's feature datasets, k-NN bank and probe width set to them.

    ``splits``: ``{'train' | 'val': (folder, its image count or None to count it)}``; ``sha`` / ``arch``:
    the student's content hash and architecture (:func:`comad.checkpoint.read_arch`).
    Returns (the caches: ``dirs``, ``keys``, ``folders``, ``info``; the changes).
    """
    if request.world_size > 1:
        raise RuntimeError(f"config {cfg.filename}: the cached protocols run on one process; launch without "
                           f"torchrun (WORLD_SIZE={request.world_size})")
    f = cfg.features
    spec = _transform_spec(f)
    common = dict(student_sha256=sha, transform=spec, pooling=f.pooling)
    root = Path(f.cache_dir) if f.get("cache_dir") else request.work_dir.resolve().parent / "feature_cache"
    digest = hashlib.sha1(json.dumps(common, sort_keys=True).encode()).hexdigest()[:16]
    folders = {split: folder for split, (folder, _) in splits.items()}
    dirs = {split: root / digest / split for split in folders}
    keys = {split: dict(common, split=split, data=str(Path(folder).resolve()),
                        num_samples=count_images(folder) if n is None else n, classes=classes)
            for split, (folder, n) in splits.items()}
    cfg.test_dataloader.dataset.cache_dir = str(dirs["val"])
    changes = [f"test_dataloader.dataset.cache_dir: {dirs['val']}"]
    if cfg.get("train_dataloader"):
        cfg.train_dataloader.dataset.cache_dir = str(dirs["train"])
        changes.append(f"train_dataloader.dataset.cache_dir: {dirs['train']}")
    if "bank" in cfg.model:
        cfg.model.bank = str(dirs["train"])
        changes.append(f"model.bank: {dirs['train']}")
    if "feature_dim" in cfg.model:
        cfg.model.feature_dim = arch["embed_dim"]
        changes.append(f"model.feature_dim: {cfg.model.feature_dim} (the student's width)")
    info = dict(cache_dir=str(root / digest), pooling=f.pooling)
    return dict(dirs=dirs, keys=keys, folders=folders, info=info, spec=spec), changes


def fill_feature_caches(cfg: Config, request: TaskRequest, caches: dict[str, Any], logger: Any) -> None:
    """Extract (or resume, or reuse) both caches from the frozen student; sets ``caches['load_report']``."""
    from comad.data.dataset import ImageFolderDataset
    from comad.data.transforms import build_transform

    f = cfg.features
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    loaded = load_vit(request.student, img_size=int(f.img_size))
    vit = loaded.model.to(device).eval().requires_grad_(False)
    caches["load_report"] = dict(loaded.report)
    snapshot = backbone_snapshot(vit)
    transform = build_transform(caches["spec"])
    for split, folder in caches["folders"].items():
        ds = ImageFolderDataset(Path(folder).parent, split=Path(folder).name, transform=transform,
                                on_corrupt="error")  # a cache row per image: a corrupt one is named, not replaced
        FeatureCache(caches["dirs"][split]).build(
            vit, ds, caches["keys"][split], pooling=f.pooling, batch_size=int(f.batch_size),
            chunk_size=int(f.chunk_size), num_workers=int(f.num_workers), device=device, amp=f.get("amp"),
            log=logger.info)
    assert_backbone_unchanged(vit, snapshot)
