"""The demo configs (``--demo``): each is its task's benchmark config, smaller, and nothing else.

A demo config inherits its benchmark config and changes only what makes it a demo: every image
size x 1/4 (dense tasks) or the digits' 32 px (ImageNet), the batch, the iterations / epochs and
the lr schedule fitted to them, the lr, loader workers, fewer proposals for images with a handful
of objects, and no validation inside the short run. Everything else — the architecture, the
heads, the optimizer, the losses, the augmentations — must be the benchmark's, so that a demo
runs the recipe it stands for.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest

pytest.importorskip("mmengine")
from mmengine.config import Config  # noqa: E402

from comad.repo import REPO_ROOT  # noqa: E402

#: What a dense demo config may change (dotted keys, fnmatch patterns).
DENSE_DEMO_KEYS = (
    "train_dataloader.batch_size", "*.num_workers", "*.persistent_workers", "val_dataloader*", "val_evaluator*",
    "val_cfg*", "train_cfg*", "param_scheduler*", "default_hooks.checkpoint.*", "default_hooks.logger.*",
    "log_processor.*", "optim_wrapper.optimizer.lr", "model.train_cfg.rpn_proposal.*",
    "model.train_cfg.rcnn.sampler.num", "model.test_cfg.rpn.*", "model.test_cfg.rcnn.max_per_img",
    "model.test_cfg.rcnn.score_thr",
    "image_size",  # a variable of the LSJ config that the size-pair scan below does not see (a 2-tuple of 1024s)
)
#: What an ImageNet demo config may change (dotted keys, fnmatch patterns): the digits' classes and 32 px,
#: the batch, workers, subset, the schedule and what it gives (iterations, lr, scheduler bounds, intervals).
IMAGENET_DEMO_KEYS = ("gpus", "model.num_classes", "model.img_size", "*.input_size", "*.batch_size", "*.num_workers",
                      "*.persistent_workers", "*.num_samples", "schedule.*", "train_cfg.*", "optim_wrapper.optimizer.lr",
                      "param_scheduler*", "default_hooks.checkpoint.interval", "default_hooks.logger.interval",
                      "log_processor.window_size", "val_dataloader*", "val_evaluator*", "val_cfg*", "features.img_size",
                      "features.batch_size", "features.chunk_size", "features.num_workers", "demo_data.*")


def _flat(d, prefix: str = "") -> dict[str, object]:
    """Dotted keys -> leaves; ``_scope_`` (the default scope is the same) dropped, lists indexed."""
    out: dict[str, object] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if k != "_scope_":
                out.update(_flat(v, f"{prefix}{k}."))
    elif isinstance(d, (list, tuple)) and any(isinstance(x, (dict, list, tuple)) for x in d):
        for i, v in enumerate(d):
            out.update(_flat(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = tuple(d) if isinstance(d, list) else d
    return out


def _differences(a: dict, b: dict, allowed: tuple[str, ...]) -> list[str]:
    return [f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}" for k in sorted(set(a) | set(b))
            if a.get(k, "<absent>") != b.get(k, "<absent>") and not any(fnmatch.fnmatch(k, p) for p in allowed)]


def _mm_tasks():
    from transfer.tasks import MM_TASKS

    return MM_TASKS


@pytest.mark.mm
@pytest.mark.parametrize("task", ["ade20k", "ade20k-tinymim", "ade20k-linear", "ade20k-linear4", "coco", "coco-lsj"])
def test_dense_demo_config_is_the_benchmark_at_a_quarter_size(task):
    from transfer.cfg import scale_sizes

    t = _mm_tasks()[task]
    full, demo = Config.fromfile(str(t.config_path)), Config.fromfile(str(REPO_ROOT / t.demo_config))
    assert demo.filename != full.filename and Path(t.demo_config).parent.name == "demo"
    scaled = scale_sizes(full._cfg_dict, 0.25)  # the reference: every image-size pair of the benchmark x 1/4
    assert scaled, f"{t.config}: no image size found to scale"
    wrong = _differences(_flat(full.to_dict()), _flat(demo.to_dict()), DENSE_DEMO_KEYS)
    assert not wrong, f"{t.demo_config} differs from {t.config} (sizes x 1/4) beyond the demo's keys:\n" + "\n".join(wrong)
    # a short run, one test at the end, a schedule that fits in it
    loop = demo.train_cfg
    assert loop.type == "IterBasedTrainLoop" and loop.max_iters <= 120 and loop.val_interval > loop.max_iters
    assert demo.val_dataloader is None and demo.train_dataloader.num_workers == 0
    assert all(s.end <= loop.max_iters and not s.by_epoch for s in demo.param_scheduler)
    assert demo.default_hooks.checkpoint.interval == loop.max_iters


@pytest.mark.parametrize("task", ["imagenet-ft", "imagenet-linear", "imagenet-linear-cached", "imagenet-knn"])
def test_imagenet_demo_config_changes_only_the_demo_keys(task):
    from transfer.imagenet.tasks import DEFAULT_CONFIGS, DEMO_CONFIGS

    full, demo = Config.fromfile(str(DEFAULT_CONFIGS[task])), Config.fromfile(str(DEMO_CONFIGS[task]))
    wrong = _differences(_flat(full.to_dict()), _flat(demo.to_dict()), IMAGENET_DEMO_KEYS)
    assert not wrong, f"{DEMO_CONFIGS[task]} differs from {DEFAULT_CONFIGS[task]} beyond the demo's keys:\n" + "\n".join(wrong)
    size = demo.model.get("img_size") or demo.features.img_size
    assert demo.task == task and size == demo.demo_data.img_size == 32 and demo.model.num_classes == 10
    assert demo.get("gpus", 1) == 1 and "demo_data" not in full  # the benchmark config holds no demo settings


@pytest.mark.parametrize("task", ["imagenet-ft", "imagenet-linear", "imagenet-linear-cached"])
@pytest.mark.parametrize("demo", [False, True])
def test_imagenet_config_on_disk_is_the_run_its_schedule_gives(task, demo):
    """Iterations, lr, warm-up and scheduler bounds written in a config are what its `schedule` gives
    on its own GPU count: deriving them again changes nothing (as for the distillation configs)."""
    from comad.engine.schedule import apply_schedule, resolve_schedule
    from transfer.imagenet.tasks import DEFAULT_CONFIGS, DEMO_CONFIGS

    cfg = Config.fromfile(str((DEMO_CONFIGS if demo else DEFAULT_CONFIGS)[task]))
    sched = resolve_schedule(dict(cfg.schedule), cfg.train_dataloader.batch_size, cfg.gpus, cfg.get("accumulation", 1))
    before = cfg.to_dict()
    assert apply_schedule(cfg, sched) == [], f"{cfg.filename}: the written schedule is not what `schedule` gives"
    assert cfg.to_dict() == before
    ipe = sched["iters_per_epoch"]
    assert cfg.default_hooks.checkpoint.interval % ipe == 0  # checkpoints at epoch ends
    if cfg.get("val_dataloader"):
        assert cfg.train_cfg.val_interval % ipe == 0


def test_every_demo_config_belongs_to_a_task():
    from transfer.imagenet.tasks import DEMO_CONFIGS

    pytest.importorskip("mmseg")
    used = {REPO_ROOT / t.demo_config for t in _mm_tasks().values()} | set(DEMO_CONFIGS.values())
    on_disk = set((REPO_ROOT / "benchmark_configs").glob("*/demo/*.py"))
    assert on_disk == used, f"demo configs no task runs: {sorted(on_disk - used)}; missing: {sorted(used - on_disk)}"
