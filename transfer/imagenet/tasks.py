"""ImageNet tasks of the task table (``tools/run_transfer.sh`` / ``transfer/run.py``, ``tools/linear_probe.py``).

``IMAGENET_TASKS[name]`` is a :class:`~transfer.runner.Task`: ``run(request)`` runs one protocol
on one student and returns a :class:`~transfer.runner.TaskResult` (metrics ``{'top1', 'top5'}`` in
percent, the protocol as run, the load report). Every protocol is an ordinary config on mmengine's
Runner, built and resumed as the dense tasks' (:func:`transfer.mm_runner.build_task_runner`:
``<work_dir>/iter_N.pth``, exact resume through :class:`transfer.resume.ExactResumeHook`, logs
under ``<work_dir>/<timestamp>/``); ``metrics.json`` is written by :func:`transfer.runner.run_task`.

- ``imagenet-ft``: fine-tune (``finetune_vit-tiny_8xb128-300e_in1k-224.py``, :class:`~.models.ViTClassifier`)
- ``imagenet-linear``: MAE online linear probe (``linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py``, :class:`~.models.LinearProbe`)
- ``imagenet-linear-cached``: linear probe on cached features (``linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py``)
- ``imagenet-knn``: k-NN on cached features (``knn_vit-tiny_k20-t0.07_in1k-224.py``, ``Runner.test()`` only)

Data: ``<data_root>/imagenet/{train,val}/<class>/*.JPEG``. With ``demo=True`` each task runs its
demo config (:data:`DEMO_CONFIGS`) on the real digits set of :mod:`transfer.imagenet.demo_data`
(made once, as the config's ``demo_data`` says).
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from mmengine.config import Config

from comad.checkpoint import content_sha256, read_arch
from comad.repo import repo_relative
from comad.runtime import parse_cfg_options

from ..runner import Task, TaskRequest, TaskResult
from .cache import CACHED_TASKS, feature_cache_dirs, fill_feature_caches
from .config import CONFIG_DIR, derive_schedule, load_task_config, nested_datasets
from .data import check_split, count_images, imagenet_split_dirs
from .demo_data import DEFAULT_DEMO_DIR, ensure_demo_imagenet
from .protocols import protocol_entries

__all__ = ["IMAGENET_TASKS", "DEFAULT_CONFIGS", "DEMO_CONFIGS", "run_imagenet_task"]

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


def _task_config(task: str, request: TaskRequest) -> tuple[Config, Path]:
    """(the config, its file): ``request.config``, else the task's (with ``--demo`` its demo config), with
    ``--cfg-options``; checks the task and the student file."""
    if task not in DEFAULT_CONFIGS:
        raise KeyError(f"ImageNet task {task!r}: expected one of {sorted(DEFAULT_CONFIGS)}")
    path = Path(request.config or (DEMO_CONFIGS if request.demo else DEFAULT_CONFIGS)[task])
    cfg = load_task_config(path, request.cfg_options)
    if cfg.get("task") != task:
        raise ValueError(f"config {path}: is for task {cfg.get('task')!r}, not {task!r}")
    if not request.student.is_file():
        raise FileNotFoundError(f"student {request.student}: no such file (expected student.safetensors / student.pth "
                                f"from comad/export.py, or a timm ViT state dict)")
    return cfg, path


def _data_root(cfg: Config, request: TaskRequest) -> Path:
    """``<data_root>/imagenet``, or with ``--demo`` the demo digits (made once as ``cfg.demo_data`` says)."""
    if not request.demo:
        return Path(request.data_root) / "imagenet"
    if "demo_data" not in cfg:
        raise KeyError(f"config {cfg.filename}: has no 'demo_data' (the demo set --demo runs on); a demo config "
                       f"inherits benchmark_configs/imagenet/_base_/demo_data.py (see {CONFIG_DIR / 'demo'})")
    d = cfg.demo_data
    return ensure_demo_imagenet(d.data_dir or DEFAULT_DEMO_DIR, img_size=d.img_size, source=d.source,
                                val_fraction=d.val_fraction, per_class=d.per_class, seed=d.seed)


def _seed_data(cfg: Config, seed: int) -> list[str]:
    """The run's seed for mmengine (``randomness``) and for the datasets' subsets and augmentation."""
    cfg.randomness = dict(cfg.get("randomness") or {}, seed=seed)
    for ds in nested_datasets((cfg.get("train_dataloader") or {}).get("dataset")):
        if "seed" in ds:
            ds.seed = seed
    return [f"randomness.seed and the training datasets' seeds: {seed}"]


def _train_samples(cfg: Config, n: int) -> int:
    """The training samples of ``n`` images the config's train dataset uses (a class-balanced subset's size)."""
    for ds in nested_datasets((cfg.get("train_dataloader") or {}).get("dataset")):
        if ds.get("type") == "ClassBalancedSubset" and ds.get("num_samples"):
            n = min(n, int(ds.num_samples))
    return n


def _check_classes(cfg: Config, path: Path, classes: list[str]) -> None:
    if int(cfg.model.num_classes) != len(classes):
        raise ValueError(f"config {path}: model.num_classes={cfg.model.num_classes}, the data has {len(classes)} "
                         f"class folders; set model.num_classes (--cfg-options model.num_classes={len(classes)})")


def _prepare(task: str, request: TaskRequest, cfg: Config, root: Path, sha: str) -> tuple[dict[str, Any], list[str]]:
    """Point the config at the data, the student (or its feature caches) and this run's schedule; returns
    (facts for the record, the changes). ``sha``: the student's content hash."""
    from comad.engine.progress import add_progress_hook
    from ..cfg import set_data_root
    from ..mm_runner import guarded_optim_wrapper
    from ..resume import safe_checkpointing

    arch = read_arch(request.student)  # a file the loader cannot use is named first, as by every task
    train_dir, val_dir = imagenet_split_dirs(root)
    classes = check_split(train_dir)
    _check_classes(cfg, Path(cfg.filename), classes)
    seed = int(cfg.randomness.seed) if request.seed is None else int(request.seed)
    changes = set_data_root(cfg, str(root)) + _seed_data(cfg, seed)
    num_train = count_images(train_dir)
    facts: dict[str, Any] = dict(seed=seed, classes=classes, train_dir=train_dir, val_dir=val_dir,
                                 train_samples=_train_samples(cfg, num_train), sched=None)
    if task in CACHED_TASKS:
        facts["caches"], more = feature_cache_dirs(cfg, request, dict(train=(train_dir, num_train), val=(val_dir, None)),
                                                   classes, sha, arch)
        changes += more
    else:
        cfg.model.student = str(request.student)
    if cfg.get("train_cfg"):
        facts["sched"], more = derive_schedule(cfg, facts["train_samples"], request.world_size, request.max_iters,
                                               parse_cfg_options(request.cfg_options))
        changes += more + guarded_optim_wrapper(cfg) + safe_checkpointing(cfg)
    changes += add_progress_hook(cfg, task, ("top1",))
    cfg.work_dir = str(request.work_dir)
    cfg.resume = bool(cfg.get("train_cfg"))
    cfg.load_from = None
    cfg.launcher = "none" if request.world_size == 1 else (request.launcher if request.launcher != "none" else "pytorch")
    return facts, changes


def run_imagenet_task(task: str, request: TaskRequest) -> TaskResult:
    """Run one ImageNet protocol on ``request`` on mmengine's Runner; returns its metrics (percent) and provenance."""
    from comad.console import prints_to_log
    from ..mm_runner import build_task_runner, runner_metrics
    from .timm_release import finetune_release

    cfg, path = _task_config(task, request)
    root = _data_root(cfg, request)
    sha = content_sha256(request.student)
    facts, changes = _prepare(task, request, cfg, root, sha)
    runner = build_task_runner(task, path, request, cfg, changes, sha)
    with prints_to_log(runner.logger):
        if task in CACHED_TASKS:
            fill_feature_caches(cfg, request, facts["caches"], runner.logger)
        if cfg.get("train_cfg"):
            runner.train()
        metrics = runner_metrics(runner.test())
        runner.visualizer.add_scalars(metrics, step=runner.iter)  # the run's scalars.json ends with its result
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    if hasattr(model, "assert_backbone_unchanged"):  # a probe's number is the student's own features'
        model.assert_backbone_unchanged()
    report = dict(getattr(model, "load_report", None) or facts.get("caches", {}).get("load_report", {}))
    release = None
    if task == "imagenet-ft":  # named after the config that ran (a demo config says so in its name)
        release = finetune_release(model, path, dict(cfg.test_dataloader.dataset.transform), facts["classes"],
                                   request.student, sha, runner.iter, facts["seed"])
    protocol = protocol_entries(task, cfg, request, facts, runner, report)
    data = dict(root=str(root), train=str(facts["train_dir"]), val=str(facts["val_dir"]))
    eff = facts["sched"]["effective_batch"] if facts["sched"] else 0
    return TaskResult(metrics=metrics, config=repo_relative(path), seed=facts["seed"], protocol=protocol,
                      name=cfg.get("name") or None, release=release,
                      info=dict(effective_batch=eff, data=data, load_report=report, log_dir=str(runner.log_dir),
                                config_changes=changes, student_sha256=sha))


IMAGENET_TASKS: dict[str, Task] = {
    name: Task(name, partial(run_imagenet_task, name), ("top1", "top5"), repo_relative(path))
    for name, path in DEFAULT_CONFIGS.items()
}
