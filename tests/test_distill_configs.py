"""The distillation configs describe their run (issue 22): lr, iterations and scheduler bounds are
the values `schedule` gives on the config's own GPU count, so resolving them there changes nothing;
on another count they are derived again, a third scheduler included."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from comad.engine.schedule import apply_schedule, resolve_schedule

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "benchmark_configs" / "distill").glob("*.py"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_config_is_its_own_run(path):
    cfg = Config.fromfile(str(path))
    sched = resolve_schedule(dict(cfg.schedule), cfg.train_dataloader.batch_size, cfg.gpus, cfg.get("accumulation", 1))
    before = (cfg.optim_wrapper.optimizer.lr, cfg.train_cfg.max_iters, [dict(s) for s in cfg.param_scheduler])
    assert apply_schedule(cfg, sched) == [], f"{path.name} does not state the run its schedule gives on {cfg.gpus} GPU(s)"
    assert (cfg.optim_wrapper.optimizer.lr, cfg.train_cfg.max_iters, [dict(s) for s in cfg.param_scheduler]) == before
    assert cfg.optim_wrapper.type == "ComadOptimWrapper"
    assert f"{cfg.gpus}xb{cfg.train_dataloader.batch_size}" in path.stem


def test_another_gpu_count_is_derived_and_a_third_scheduler_keeps_its_fraction():
    cfg = Config.fromfile(str(next(p for p in CONFIGS if p.stem == "comad_vit-tiny_8xb512-300e_in1k-224")))
    cfg.param_scheduler.append(dict(type="ConstantLR", by_epoch=False, begin=46950, end=93900, factor=1.0))
    sched = resolve_schedule(dict(cfg.schedule), 512, 4, 1)  # 4 GPUs: 2048 per step, 626 iterations per epoch
    changes = apply_schedule(cfg, sched)
    assert cfg.optim_wrapper.optimizer.lr == pytest.approx(1.5e-4 * 2048 / 256) and cfg.train_cfg.max_iters == 187800
    warm, cosine, const = cfg.param_scheduler
    assert (warm.end, cosine.begin, cosine.end) == (15 * 626, 15 * 626, 187800)
    assert (const.begin, const.end) == (93900, 187800)  # half of the run, as before
    assert any("train_cfg.max_iters: 93900 -> 187800" in c for c in changes)
    short = Config.fromfile(str(CONFIGS[0]))
    apply_schedule(short, resolve_schedule(dict(short.schedule, max_iters=3), 16, 1, 1))
    assert [s.type for s in short.param_scheduler] == ["LinearLR"]  # shorter than its warm-up: all warm-up
