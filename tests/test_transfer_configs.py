"""Benchmark configs: they parse, build, state their protocol truthfully, and the run-time edits
(fit to the student, --max-iters, demo sizes, data root) do what they say."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch

from comad.export import export_student
from transfer.cfg import cut_schedule, fit_to_student, resolved_protocol, scale_sizes, set_data_root
from transfer.tasks import MM_TASKS, REPO_ROOT

pytestmark = pytest.mark.mm

CONFIGS = sorted((REPO_ROOT / "benchmark_configs").glob("ade20k/*.py")) + sorted(
    (REPO_ROOT / "benchmark_configs").glob("coco/*.py"))
NAME = re.compile(r"^[a-z0-9-]+_comad-vit-t(-[a-z]+)?_(\d+)xb(\d+)-[a-z0-9-]+_[a-z0-9]+-\d+x\d+\.py$")


def _load(path: Path):
    from mmengine.config import Config

    return Config.fromfile(str(path))


def _build(cfg):
    from mmengine.config import ConfigDict
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings

    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope(cfg.default_scope)
    return MODELS.build(ConfigDict(cfg.model))


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    torch.manual_seed(0)
    vit = timm.models.vision_transformer.VisionTransformer(img_size=64, patch_size=16, embed_dim=48, depth=6,
                                                           num_heads=3, num_classes=0)
    return export_student(vit, tmp_path_factory.mktemp("tiny") / "student")


def test_task_table_points_at_existing_configs():
    assert set(MM_TASKS) == {"ade20k", "ade20k-tinymim", "ade20k-linear", "ade20k-linear4", "coco", "coco-lsj"}
    assert {p.resolve() for p in CONFIGS} == {t.config_path.resolve() for t in MM_TASKS.values()}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_names_protocol_and_builds(path):
    m = NAME.match(path.name)
    assert m, f"{path.name} does not follow {{algo}}_{{backbone}}_{{gpus}}xb{{batch}}-{{sched}}_{{data}}-{{res}}.py"
    cfg = _load(path)
    p = cfg.protocol
    for key in ("effective_batch", "lr", "layer_decay", "drop_path", "schedule", "inference", "test_scales",
                "pyramid_blocks", "pos_embed", "framework", "metrics"):
        assert key in p, f"{path.name}: protocol lacks '{key}'"
    # the stated protocol is what the config does
    r = resolved_protocol(cfg, world_size=p["gpus"])
    assert (int(m.group(2)), int(m.group(3))) == (p["gpus"], p["batch_per_gpu"])
    for key in ("effective_batch", "batch_per_gpu", "lr", "weight_decay", "layer_decay", "drop_path", "pyramid_blocks"):
        assert r[key] == pytest.approx(p[key]) if isinstance(p[key], float) else tuple(r[key]) == tuple(p[key]) \
            if isinstance(p[key], tuple) else r[key] == p[key], key
    assert r["inference"].startswith(p["inference"].split(",")[0])
    # no width is written outside student_arch: every neck/head width is the backbone's
    assert cfg.model.backbone.embed_dim == cfg.student_arch["embed_dim"]
    model = _build(cfg)
    assert type(model.backbone).__name__ == "ComadMAEViT"
    assert model.backbone.embed_dim == cfg.student_arch["embed_dim"]


def test_layer_decay_groups_seg_and_det(tiny_student):
    """lr scale of block i = decay^(depth - i), patch_embed/pos/cls = decay^(depth + 1), heads 1 (BEiT rule)."""
    from mmengine.optim import build_optim_wrapper

    for name in ("ade20k", "coco"):
        cfg = _load(MM_TASKS[name].config_path)
        cfg.model.backbone.student = str(tiny_student)
        fit_to_student(cfg, dict(embed_dim=48, depth=6, num_heads=3, patch_size=16))
        model = _build(cfg)
        ow = build_optim_wrapper(model, cfg.optim_wrapper)
        d = cfg.optim_wrapper.paramwise_cfg.decay_rate
        scale = {n: g["lr_scale"] for g in ow.optimizer.param_groups for n in g["param_names"]}
        assert scale["backbone.pos_embed"] == pytest.approx(d ** 7)
        assert scale["backbone.patch_embed.proj.weight"] == pytest.approx(d ** 7)
        assert scale["backbone.layers.0.attn.qkv.weight"] == pytest.approx(d ** 6)
        assert scale["backbone.layers.5.mlp.fc2.bias"] == pytest.approx(d)
        head = next(n for n in scale if not n.startswith("backbone."))
        assert scale[head] == 1.0 and scale.get("backbone.norm.weight", 1.0) == 1.0
        groups = {g["group_name"]: g for g in ow.optimizer.param_groups}
        assert groups["layer_3_decay"]["lr"] == pytest.approx(cfg.optim_wrapper.optimizer.lr * d ** 4)


def test_fit_to_student_rescales_listed_fields(tiny_student):
    cfg = _load(MM_TASKS["ade20k"].config_path)
    changes = fit_to_student(cfg, dict(embed_dim=48, depth=6, num_heads=3, patch_size=16))
    assert cfg.model.neck.embed_dim == 48 and list(cfg.model.decode_head.in_channels) == [48] * 4
    assert cfg.model.auxiliary_head.in_channels == 48
    assert tuple(cfg.model.backbone.out_indices) == (1, 2, 3, 5)  # blocks 3,5,7,11 of 12 -> of 6
    assert cfg.optim_wrapper.paramwise_cfg.num_layers == 6
    assert any("model.neck.embed_dim: 192 -> 48" in c for c in changes)
    det = _load(MM_TASKS["coco"].config_path)
    fit_to_student(det, dict(embed_dim=48, depth=6, num_heads=3, patch_size=16))
    assert det.model.neck[0].in_channels == 48 and list(det.model.neck[1].in_channels) == [12, 24, 48, 48]
    cfg = _load(MM_TASKS["ade20k"].config_path)
    with pytest.raises(ValueError, match=r"pyramid blocks \[3, 5, 7, 11\].*depth-4.*model.backbone.out_indices"):
        fit_to_student(cfg, dict(embed_dim=48, depth=4, num_heads=3, patch_size=16))
    cfg.model.backbone.out_indices = (0, 1, 2, 3)
    fit_to_student(cfg, dict(embed_dim=48, depth=4, num_heads=3, patch_size=16), explicit={"model.backbone.out_indices"})
    assert tuple(cfg.model.backbone.out_indices) == (0, 1, 2, 3)


def test_cut_schedule_keeps_fractions():
    cfg = _load(MM_TASKS["ade20k"].config_path)
    cut_schedule(cfg, 1600, None)
    lin, poly = cfg.param_scheduler
    assert (lin.begin, lin.end, poly.begin, poly.end) == (0, 15, 15, 1600)  # 1500/160000 of the run
    assert cfg.train_cfg == dict(type="IterBasedTrainLoop", max_iters=1600, val_interval=1601)
    det = _load(MM_TASKS["coco"].config_path)
    cut_schedule(det, 1200, iters_per_epoch=100)  # original: 12 epochs x 100 = 1200 iterations
    warm, step = det.param_scheduler
    assert (warm.end, step.milestones, step.by_epoch) == (500, [800, 1100], False)
    det = _load(MM_TASKS["coco"].config_path)
    cut_schedule(det, 12, iters_per_epoch=1000)  # warm-up 500 of 12000 -> 0.5 -> at least 2
    assert det.param_scheduler[0].end == 2 and det.param_scheduler[1].milestones == [8, 11]
    smoke = _load(MM_TASKS["ade20k"].config_path)
    cut_schedule(smoke, 2, None, log_interval=5)  # a smoke run logs its training (its table row needs the log)
    assert smoke.default_hooks.logger.interval == 2 and smoke.log_processor.window_size == 2


def test_demo_sizes_and_data_root():
    cfg = _load(MM_TASKS["coco-lsj"].config_path)
    scale_sizes(cfg._cfg_dict, 0.25)
    assert tuple(cfg.model.backbone.img_size) == (256, 256)
    assert tuple(cfg.model.data_preprocessor.batch_augments[0].size) == (256, 256)
    pipe = cfg.train_dataloader.dataset.pipeline
    assert tuple(next(t for t in pipe if t.type == "RandomCrop").crop_size) == (256, 256)
    assert tuple(next(t for t in cfg.test_dataloader.dataset.pipeline if t.type == "Pad").size) == (256, 256)
    set_data_root(cfg, "/x/coco")
    assert cfg.test_evaluator.ann_file == "/x/coco/annotations/instances_val2017.json"
    assert cfg.train_dataloader.dataset.data_root == "/x/coco/"
