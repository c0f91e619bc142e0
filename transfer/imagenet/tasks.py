"""ImageNet tasks of the task table (``tools/run_transfer.sh`` / ``transfer/run.py``, ``tools/linear_probe.py``).

``IMAGENET_TASKS[name]`` is a :class:`~transfer.runner.Task`: ``run(request)`` runs one
protocol on one student and returns a :class:`~transfer.runner.TaskResult` (metrics
``{'top1', 'top5', ...}`` in percent, the protocol as run, the load report); it writes
mmengine-style logs under ``<work_dir>/<timestamp>/`` and, for the trained protocols,
``<work_dir>/checkpoint_last.pth``. ``metrics.json`` is written by
:func:`transfer.runner.run_task`, for every task alike.

- ``imagenet-ft``: fine-tune (``finetune_vit-tiny_8xb128-300e_in1k-224.py``)
- ``imagenet-linear``: MAE online linear probe (``linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py``)
- ``imagenet-linear-cached``: linear probe on cached features (``linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py``)
- ``imagenet-knn``: k-NN on cached features (``knn_vit-tiny_k20-t0.07_in1k-224.py``)

Data: ``<data_root>/imagenet/{train,val}/<class>/*.JPEG``. With ``demo=True`` each task runs its
demo config (:data:`DEMO_CONFIGS`) on the real digits set of :mod:`transfer.imagenet.demo_data`
(made once, as the config's ``demo_data`` says).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable

from comad.checkpoint import content_sha256
from comad.release import Release
from comad.repo import repo_relative

from ..runner import Task, TaskRequest, TaskResult
from .data import build_split, imagenet_split_dirs
from .demo_data import DEFAULT_DEMO_DIR, ensure_demo_imagenet
from .features import FeatureCache, assert_backbone_unchanged, backbone_snapshot
from .env import CONFIG_DIR, DistEnv, effective_batch, init_distributed, load_task_config
from .loop import RunLog

__all__ = ["IMAGENET_TASKS", "DEFAULT_CONFIGS", "DEMO_CONFIGS", "PROTOCOLS", "run_imagenet_task"]

DEFAULT_CONFIGS: dict[str, Path] = {
    "imagenet-ft": CONFIG_DIR / "finetune_vit-tiny_8xb128-300e_in1k-224.py",
    "imagenet-linear": CONFIG_DIR / "linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py",
    "imagenet-linear-cached": CONFIG_DIR / "linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py",
    "imagenet-knn": CONFIG_DIR / "knn_vit-tiny_k20-t0.07_in1k-224.py",
}
#: The demo form of each default config (``--demo``): a config file that inherits it (``benchmark_configs/imagenet/demo/``).
DEMO_CONFIGS: dict[str, Path] = {
    "imagenet-ft": CONFIG_DIR / "demo" / "finetune_vit-tiny_1xb32-2e_digits-32.py",
    "imagenet-linear": CONFIG_DIR / "demo" / "linprobe-mae_vit-tiny_1xb64-6e_digits-32.py",
    "imagenet-linear-cached": CONFIG_DIR / "demo" / "linprobe-cached_vit-tiny_1xb64-30e_digits-32.py",
    "imagenet-knn": CONFIG_DIR / "demo" / "knn_vit-tiny_k20-t0.07_digits-32.py",
}


def _resume_key(cfg: Any, student: Path) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the student (by content), config file, seed, schedule."""
    return dict(student_sha256=content_sha256(student), config=repo_relative(cfg.config_path), seed=int(cfg.seed),
                epochs=int(cfg.epochs), batch_size=int(cfg.batch_size), img_size=int(cfg.img_size))


def _data_dirs(cfg: Any, data_root: Path, demo: bool) -> tuple[Path, Path, dict[str, Any]]:
    if demo:
        if "demo_data" not in cfg:
            raise KeyError(f"config {cfg.config_path}: has no 'demo_data' (the demo set --demo runs on); a demo config "
                           f"inherits benchmark_configs/imagenet/_base_/demo_data.py (see {CONFIG_DIR / 'demo'})")
        d = cfg.demo_data
        root = ensure_demo_imagenet(d.data_dir or DEFAULT_DEMO_DIR, img_size=d.img_size, source=d.source,
                                    val_fraction=d.val_fraction, per_class=d.per_class, seed=d.seed)
    else:
        root = Path(data_root) / "imagenet"
    train, val = imagenet_split_dirs(root)
    return train, val, dict(root=str(root))


def _cached_features(run: "_Run", vit):
    """Build (or reuse) the train/val feature caches; returns (train_f, train_y, val_f, val_y, classes, info)."""
    from .linear_probe import eval_transform

    cfg, env = run.cfg, run.env
    if cfg.get("train_subset"):
        raise ValueError(f"config {cfg.config_path}: train_subset applies to the online protocols; the cached ones "
                         f"extract the whole split (set train_subset=None)")
    if env.distributed:
        raise RuntimeError(f"config {cfg.config_path}: the cached protocols run on one process; launch without torchrun "
                           f"(WORLD_SIZE={env.world_size})")
    ev = eval_transform(cfg)
    key_common = dict(student_sha256=content_sha256(run.request.student), img_size=cfg.img_size, crop_pct=cfg.crop_pct,
                      interpolation=cfg.interpolation, mean=list(cfg.mean), std=list(cfg.std), transform=repr(ev))
    out = {}
    root = Path(cfg.cache_dir) if cfg.get("cache_dir") else run.request.work_dir.resolve().parent / "feature_cache"
    digest = hashlib.sha1(json.dumps(dict(key_common, pooling=cfg.pooling), sort_keys=True).encode()).hexdigest()[:16]
    snapshot = backbone_snapshot(vit)
    classes = None
    for split, folder in (("train", run.train_dir), ("val", run.val_dir)):
        ds = build_split(folder, ev)
        classes = classes or ds.classes
        key = dict(key_common, split=split, data=str(Path(folder).resolve()), num_samples=len(ds), classes=ds.classes)
        cache = FeatureCache(root / digest / split)
        cache.build(vit, ds, key, pooling=cfg.pooling, batch_size=cfg.extract_batch_size, chunk_size=cfg.chunk_size,
                    num_workers=cfg.num_workers, device=env.device, amp=cfg.get("amp"), log=run.log.info)
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


@dataclass
class _Run:
    """One ImageNet task being run: the request, its config, data folders, process group and log."""

    request: TaskRequest
    cfg: Any
    env: DistEnv
    log: RunLog
    train_dir: Path
    val_dir: Path
    release: Release | None = None  # set by a protocol that trains a model to publish (the fine-tune)

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    def sets(self, transforms: Callable) -> tuple[Any, Any, int]:
        return _train_val_sets(self.cfg, transforms, self.train_dir, self.val_dir, self.seed)

    def effective_batch(self) -> int:
        return effective_batch(self.cfg, self.env, self.log.logger)

    def resume_key(self) -> dict[str, Any]:
        """The resume key; with ``request.archive`` a checkpoint made for another key is moved aside first."""
        key = _resume_key(self.cfg, self.request.student)
        if self.request.archive and self.env.is_main:
            _archive_other_run(self.request.work_dir, key, self.log)
        return key


def _archive_other_run(work_dir: Path, key: dict[str, Any], log: RunLog) -> None:
    """Move ``checkpoint_last.pth`` (and the record / release beside it) aside when it was made for another key."""
    from comad.engine.launch import archive_previous_run
    from comad.io import safe_torch_load
    from .loop import CHECKPOINT

    path = work_dir / CHECKPOINT
    if not path.is_file() or safe_torch_load(path).get("key") == key:
        return
    moved = archive_previous_run(work_dir, (CHECKPOINT, "metrics.json", "release"), marker=CHECKPOINT)
    log.warning(f"{path} was made for another run (--archive): moved to {moved}; starting afresh")


# A protocol: _Run -> (metrics, protocol entries, effective batch, the student's load report)
ProtocolFn = Callable[[_Run], "tuple[dict[str, float], dict[str, Any], int, dict[str, Any]]"]


def _frozen_student(run: _Run):
    """The student encoder at the config's image size, on the device, in eval mode, without gradients."""
    from comad.checkpoint import load_vit

    loaded = load_vit(run.request.student, img_size=run.cfg.img_size)
    vit = loaded.model.to(run.env.device).eval()
    for p in vit.parameters():
        p.requires_grad_(False)
    return vit, loaded.report


def _bn(cfg: Any) -> str:
    return "BatchNorm1d(affine=False, eps=1e-6)" if cfg.get("bn") else "none"


def _finetune(run: _Run):
    from .finetune import finetune, finetune_transforms

    cfg, req = run.cfg, run.request
    eff = run.effective_batch()
    train_set, val_set, n_classes = run.sets(finetune_transforms)
    metrics, info = finetune(req.student, train_set, val_set, n_classes, cfg, run.env, req.work_dir, run.seed, eff,
                             req.max_iters, run.log, resume_key=run.resume_key())
    run.release = info["release"]  # named after the config that ran (a demo config says so in its name)
    protocol = dict(train_samples=len(train_set), optimizer="AdamW", blr=cfg.blr, lr=info["lr"],
                    layer_decay=cfg.layer_decay, drop_path=cfg.drop_path, epochs=cfg.epochs,
                    warmup_epochs=cfg.warmup_epochs, weight_decay=cfg.weight_decay, auto_augment=cfg.aug.auto_augment,
                    mixup=dict(cfg.mixup), model_ema=cfg.model_ema.enable,
                    head="avg + fc_norm (MAE global pool)" if cfg.pooling == "mean" else "CLS + norm",
                    batch_size=cfg.batch_size, accum_iter=cfg.get("accum_iter", 1), iters_run=info["iters"])
    return metrics, protocol, eff, info["load_report"]


def _online_probe(run: _Run):
    from .linear_probe import online_probe, probe_transforms

    cfg, req = run.cfg, run.request
    vit, report = _frozen_student(run)
    eff = run.effective_batch()
    train_set, val_set, n_classes = run.sets(probe_transforms)
    metrics, info = online_probe(vit, train_set, val_set, n_classes, cfg, run.env, req.work_dir, run.seed, eff,
                                 req.max_iters, run.log, resume_key=run.resume_key())
    protocol = dict(train_samples=len(train_set), protocol="mae-online", bn=_bn(cfg), optimizer="LARS", blr=cfg.blr,
                    lr=info["lr"], epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                    train_aug=dict(cfg.train_aug) if cfg.train_aug else None, batch_size=cfg.batch_size,
                    iters_run=info["iters"])
    return metrics, protocol, eff, report


def _cached_probe(run: _Run):
    from .linear_probe import train_head_on_features

    cfg = run.cfg
    vit, report = _frozen_student(run)
    train_f, train_y, val_f, val_y, classes, cinfo = _cached_features(run, vit)
    _, metrics, info = train_head_on_features(train_f, train_y, val_f, val_y, len(classes), cfg, run.seed,
                                              run.request.max_iters, run.log, run.env.device)
    protocol = dict(cinfo, crop="centre", crop_pct=cfg.crop_pct, protocol="cached", bn=_bn(cfg), optimizer="LARS",
                    blr=cfg.blr, lr=info["lr"], epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                    batch_size=cfg.batch_size, iters_run=info["iters"])
    return metrics, protocol, int(cfg.batch_size), report


def _knn(run: _Run):
    from .knn import knn_classify

    cfg = run.cfg
    vit, report = _frozen_student(run)
    train_f, train_y, val_f, val_y, classes, cinfo = _cached_features(run, vit)
    metrics = knn_classify(train_f, train_y, val_f, val_y, len(classes), k=cfg.k, temperature=cfg.temperature,
                           voting=cfg.voting)
    run.log.scalars(dict(top1=metrics["top1"], top5=metrics["top5"]), 0)
    run.log.info(f"k-NN: top1 {metrics['top1']:.2f} top5 {metrics['top5']:.2f}")
    protocol = dict(cinfo, crop="centre", crop_pct=cfg.crop_pct, protocol="knn", k=cfg.k, temperature=cfg.temperature,
                    voting=cfg.voting, bn="none")
    return metrics, protocol, 0, report


PROTOCOLS: dict[str, ProtocolFn] = {"imagenet-ft": _finetune, "imagenet-linear": _online_probe,
                                    "imagenet-linear-cached": _cached_probe, "imagenet-knn": _knn}


def _task_config(task: str, request: TaskRequest) -> Any:
    """``request.config``, else the task's config (with ``--demo`` its demo config), with ``--cfg-options`` and ``--seed``."""
    if task not in DEFAULT_CONFIGS:
        raise KeyError(f"ImageNet task {task!r}: expected one of {sorted(DEFAULT_CONFIGS)}")
    default = (DEMO_CONFIGS if request.demo else DEFAULT_CONFIGS)[task]
    cfg = load_task_config(request.config or default, request.cfg_options)
    if cfg.get("task") != task:
        raise ValueError(f"config {cfg.config_path}: is for task {cfg.get('task')!r}, not {task!r}")
    if request.seed is not None:
        cfg.seed = int(request.seed)
    if request.launcher == "slurm":
        raise RuntimeError(f"ImageNet task {task}: its process group comes from torchrun (WORLD_SIZE / RANK), not from "
                           f"srun; run it with tools/run_transfer.sh --gpus N on one node")
    if not request.student.is_file():
        raise FileNotFoundError(f"student {request.student}: no such file (expected student.safetensors / student.pth "
                                f"from comad/export.py, or a timm ViT state dict)")
    return cfg


def run_imagenet_task(task: str, request: TaskRequest) -> TaskResult:
    """Run one ImageNet protocol on ``request``; returns its metrics (percent) and provenance."""
    cfg = _task_config(task, request)
    train_dir, val_dir, data_info = _data_dirs(cfg, request.data_root, request.demo)
    env = init_distributed(cfg.get("device"))
    request.work_dir.mkdir(parents=True, exist_ok=True)
    log = RunLog(request.work_dir, task, enabled=env.is_main)
    run = _Run(request, cfg, env, log, train_dir, val_dir)
    try:
        metrics, entries, eff, report = PROTOCOLS[task](run)
    finally:
        log.close()
    protocol = {**dict(name=cfg.protocol_name, pooling=cfg.pooling, img_size=cfg.img_size, world_size=env.world_size,
                       max_iters=request.max_iters), **entries,
                **{k: report[k] for k in ("pos_embed", "missing_keys", "unexpected_keys")}}
    data = dict(data_info, train=str(train_dir), val=str(val_dir))
    return TaskResult(metrics={k: float(v) for k, v in metrics.items()}, config=repo_relative(cfg.config_path),
                      seed=int(cfg.seed), protocol=protocol, name=cfg.get("name") or None,
                      info=dict(effective_batch=eff, data=data, load_report=report, log_dir=str(log.dir)),
                      release=run.release)


IMAGENET_TASKS: dict[str, Task] = {
    name: Task(name, partial(run_imagenet_task, name), ("top1", "top5"), repo_relative(path))
    for name, path in DEFAULT_CONFIGS.items()
}
