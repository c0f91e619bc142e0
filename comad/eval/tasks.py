"""ImageNet tasks for the transfer runner (``tools/run_transfer.sh`` / ``transfer/run.py``).

``IMAGENET_TASKS[name](student, data_root, work_dir, max_iters, demo, cfg_options, config=None)``
runs one protocol on one student and returns its metrics dict (``{'top1', 'top5', ...}``,
percent); it also writes ``<work_dir>/metrics.json`` (schema: :mod:`comad.eval.metrics_io`)
with provenance, and mmengine-style logs under ``<work_dir>/<timestamp>/``.

- ``imagenet-ft``: fine-tune (``finetune_vit-tiny_8xb128-300e_in1k-224.py``)
- ``imagenet-linear``: MAE online linear probe (``linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py``)
- ``imagenet-linear-cached``: linear probe on cached features (``linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py``)
- ``imagenet-knn``: k-NN on cached features (``knn_vit-tiny_k20-t0.07_in1k-224.py``)

Data: ``<data_root>/imagenet/{train,val}/<class>/*.JPEG``; with ``demo=True`` the real
digits set of :mod:`comad.eval.demo_data` (made once) replaces it.
"""
from __future__ import annotations

import hashlib
import json
from functools import partial
from pathlib import Path
from typing import Any, Callable, Sequence

from .data import build_split, imagenet_split_dirs
from .demo_data import DEFAULT_DEMO_DIR, ensure_demo_imagenet
from .features import FeatureCache, assert_backbone_unchanged, backbone_snapshot, file_sha256
from .metrics_io import make_record, write_metrics
from .runtime import CONFIG_DIR, REPO_ROOT, RunLog, effective_batch, init_distributed, load_task_config

__all__ = ["IMAGENET_TASKS", "DEFAULT_CONFIGS", "run_imagenet_task"]

DEFAULT_CONFIGS: dict[str, Path] = {
    "imagenet-ft": CONFIG_DIR / "finetune_vit-tiny_8xb128-300e_in1k-224.py",
    "imagenet-linear": CONFIG_DIR / "linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py",
    "imagenet-linear-cached": CONFIG_DIR / "linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py",
    "imagenet-knn": CONFIG_DIR / "knn_vit-tiny_k20-t0.07_in1k-224.py",
}


def _rel(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(REPO_ROOT))
    except ValueError:
        return str(path)


def _resume_key(cfg: Any, student: Path) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: student file, config file, seed, schedule."""
    return dict(student_sha256=file_sha256(student), config=_rel(Path(cfg.config_path)), seed=int(cfg.seed),
                epochs=int(cfg.epochs), batch_size=int(cfg.batch_size), img_size=int(cfg.img_size))


def _data_dirs(cfg: Any, data_root: Path, demo: bool) -> tuple[Path, Path, dict[str, Any]]:
    if demo:
        d = cfg.demo_data
        root = ensure_demo_imagenet(d.data_dir or DEFAULT_DEMO_DIR, img_size=d.img_size, source=d.source,
                                    val_fraction=d.val_fraction, per_class=d.per_class, seed=d.seed)
    else:
        root = Path(data_root) / "imagenet"
    train, val = imagenet_split_dirs(root)
    return train, val, dict(root=str(root))


def _cached_features(cfg: Any, vit, train_dir: Path, val_dir: Path, student: Path, work_dir: Path, env, log: RunLog):
    """Build (or reuse) the train/val feature caches; returns (train_f, train_y, val_f, val_y, classes, info)."""
    from .linear_probe import eval_transform

    if cfg.get("train_subset"):
        raise ValueError(f"config {cfg.config_path}: train_subset applies to the online protocols; the cached ones "
                         f"extract the whole split (set train_subset=None)")
    if env.distributed:
        raise RuntimeError(f"config {cfg.config_path}: the cached protocols run on one process; launch without torchrun "
                           f"(WORLD_SIZE={env.world_size})")
    ev = eval_transform(cfg)
    key_common = dict(student_sha256=file_sha256(student), img_size=cfg.img_size, crop_pct=cfg.crop_pct,
                      interpolation=cfg.interpolation, mean=list(cfg.mean), std=list(cfg.std), transform=repr(ev))
    out = {}
    root = Path(cfg.cache_dir) if cfg.get("cache_dir") else Path(work_dir).resolve().parent / "feature_cache"
    digest = hashlib.sha1(json.dumps(dict(key_common, pooling=cfg.pooling), sort_keys=True).encode()).hexdigest()[:16]
    snapshot = backbone_snapshot(vit)
    classes = None
    for split, folder in (("train", train_dir), ("val", val_dir)):
        ds = build_split(folder, ev)
        classes = classes or ds.classes
        key = dict(key_common, split=split, data=str(Path(folder).resolve()), num_samples=len(ds), classes=ds.classes)
        cache = FeatureCache(root / digest / split)
        cache.build(vit, ds, key, pooling=cfg.pooling, batch_size=cfg.extract_batch_size, chunk_size=cfg.chunk_size,
                    num_workers=cfg.num_workers, device=env.device, amp=cfg.get("amp"), log=log.info)
        out[split] = cache.load()[:2]
    assert_backbone_unchanged(vit, snapshot)
    info = dict(cache_dir=str(root / digest), pooling=cfg.pooling)
    return out["train"][0], out["train"][1], out["val"][0], out["val"][1], classes, info


def _subset(cfg: Any, dataset: Any, seed: int) -> Any:
    """``cfg.train_subset`` samples of a training split, class-balanced and seeded (all when None)."""
    n = cfg.get("train_subset")
    if not n or n >= len(dataset):
        return dataset
    from sklearn.model_selection import train_test_split
    from torch.utils.data import Subset

    idx, _ = train_test_split(list(range(len(dataset))), train_size=int(n), stratify=dataset.targets, random_state=seed)
    return Subset(dataset, sorted(idx))


def _train_val_sets(cfg: Any, transforms: Any, train_dir: Path, val_dir: Path, seed: int) -> tuple[Any, Any, int]:
    """(training set (``cfg.train_subset`` of it), validation set, number of classes) built with
    ``transforms(cfg) -> (train transform, eval transform)``."""
    tr, ev = transforms(cfg)
    full = build_split(train_dir, tr)
    return _subset(cfg, full, seed), build_split(val_dir, ev), len(full.classes)


def run_imagenet_task(task: str, student: Path, data_root: Path, work_dir: Path, max_iters: int | None, demo: bool,
                      cfg_options: Sequence[str], config: Path | None = None) -> dict[str, float]:
    """Run one ImageNet task; write ``<work_dir>/metrics.json``; return the metrics (percent)."""
    import torch

    from .student import load_student

    if task not in DEFAULT_CONFIGS:
        raise KeyError(f"ImageNet task {task!r}: expected one of {sorted(DEFAULT_CONFIGS)}")
    cfg = load_task_config(config or DEFAULT_CONFIGS[task], cfg_options, demo)
    if cfg.get("task") != task:
        raise ValueError(f"config {cfg.config_path}: is for task {cfg.get('task')!r}, not {task!r}")
    student, work_dir = Path(student), Path(work_dir)
    if not student.is_file():
        raise FileNotFoundError(f"student {student}: no such file (expected student.safetensors / student.pth from "
                                f"comad/export.py, or a timm ViT state dict)")
    train_dir, val_dir, data_info = _data_dirs(cfg, Path(data_root), demo)
    env = init_distributed(cfg.get("device"))
    work_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(work_dir, task, enabled=env.is_main)
    seed = int(cfg.seed)
    protocol: dict[str, Any] = dict(name=cfg.protocol_name, pooling=cfg.pooling, img_size=cfg.img_size,
                                    world_size=env.world_size, max_iters=max_iters)
    extra: dict[str, Any] = {}
    try:
        if task == "imagenet-ft":
            from .finetune import finetune, finetune_transforms

            eff = effective_batch(cfg, env, demo, log.logger)
            train_set, val_set, n_classes = _train_val_sets(cfg, finetune_transforms, train_dir, val_dir, seed)
            protocol["train_samples"] = len(train_set)
            metrics, info = finetune(student, train_set, val_set, n_classes, cfg, env, work_dir, seed, eff,
                                     max_iters, log, resume_key=_resume_key(cfg, student))
            protocol.update(optimizer="AdamW", blr=cfg.blr, lr=info["lr"], layer_decay=cfg.layer_decay, drop_path=cfg.drop_path,
                            epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay,
                            auto_augment=cfg.aug.auto_augment, mixup=dict(cfg.mixup), model_ema=cfg.model_ema.enable,
                            head="avg + fc_norm (MAE global pool)" if cfg.pooling == "mean" else "CLS + norm",
                            batch_size=cfg.batch_size, accum_iter=cfg.get("accum_iter", 1), iters_run=info["iters"])
            extra["load_report"] = info["load_report"]
        else:
            loaded = load_student(student, img_size=cfg.img_size)
            vit = loaded.model.to(env.device).eval()
            for p in vit.parameters():
                p.requires_grad_(False)
            extra["load_report"] = loaded.report
            bn = "BatchNorm1d(affine=False, eps=1e-6)" if cfg.get("bn") else "none"
            if task == "imagenet-linear":
                from .linear_probe import online_probe, probe_transforms

                eff = effective_batch(cfg, env, demo, log.logger)
                train_set, val_set, n_classes = _train_val_sets(cfg, probe_transforms, train_dir, val_dir, seed)
                protocol["train_samples"] = len(train_set)
                metrics, info = online_probe(vit, train_set, val_set, n_classes, cfg, env, work_dir, seed, eff,
                                             max_iters, log, resume_key=_resume_key(cfg, student))
                protocol.update(protocol="mae-online", bn=bn, optimizer="LARS", blr=cfg.blr, lr=info["lr"], epochs=cfg.epochs,
                                warmup_epochs=cfg.warmup_epochs, train_aug=dict(cfg.train_aug) if cfg.train_aug else None,
                                batch_size=cfg.batch_size, iters_run=info["iters"])
            else:
                train_f, train_y, val_f, val_y, classes, cinfo = _cached_features(cfg, vit, train_dir, val_dir, student, work_dir, env, log)
                eff = int(cfg.batch_size) if task == "imagenet-linear-cached" else 0
                protocol.update(cinfo, crop="centre", crop_pct=cfg.crop_pct)
                if task == "imagenet-linear-cached":
                    from .linear_probe import train_head_on_features

                    _, metrics, info = train_head_on_features(train_f, train_y, val_f, val_y, len(classes), cfg, seed,
                                                              max_iters, log, env.device)
                    protocol.update(protocol="cached", bn=bn, optimizer="LARS", blr=cfg.blr, lr=info["lr"], epochs=cfg.epochs,
                                    warmup_epochs=cfg.warmup_epochs, batch_size=cfg.batch_size, iters_run=info["iters"])
                else:
                    from .knn import knn_classify

                    metrics = knn_classify(train_f, train_y, val_f, val_y, len(classes), k=cfg.k,
                                           temperature=cfg.temperature, voting=cfg.voting)
                    protocol.update(protocol="knn", k=cfg.k, temperature=cfg.temperature, voting=cfg.voting, bn="none")
                    log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"]), 0)
                    log.info(f"k-NN: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
        protocol.update(pos_embed=extra["load_report"]["pos_embed"], missing_keys=extra["load_report"]["missing_keys"],
                        unexpected_keys=extra["load_report"]["unexpected_keys"])
        record = make_record(task, metrics, student=_rel(student), config=_rel(Path(cfg.config_path)), seed=seed, demo=demo,
                             name=cfg.get("name") or None, protocol=protocol, effective_batch=eff,
                             data=dict(data_info, train=str(train_dir), val=str(val_dir)), **extra)
        if env.is_main:
            write_metrics(record, work_dir)
        if env.distributed:
            torch.distributed.barrier()
        return dict(record["metrics"])
    finally:
        log.close()


IMAGENET_TASKS: dict[str, Callable[..., dict]] = {name: partial(run_imagenet_task, name) for name in DEFAULT_CONFIGS}
