"""Each dense recipe pinned against its peer's own values, key by key after mmengine resolution
(issue 23). The facts are written here, read from the peers' configs: mmsegmentation 1.2.2
``configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py`` (on ``_base_/models/upernet_mae.py``)
and mmdetection's ``projects/ViTDet/configs/vitdet_mask-rcnn_vit-b-mae_lsj-100e.py`` (on
``lsj-100e_coco-instance.py``); only the widths are the student's (ViT-B's 768 -> ViT-T's 192)."""
from __future__ import annotations

import pytest

from transfer.tasks import MM_TASKS

pytestmark = pytest.mark.mm


def _cfg(task: str):
    from mmengine.config import Config

    return Config.fromfile(str(MM_TASKS[task].config_path))


def _step(pipeline, kind):
    return next(t for t in pipeline if t.type == kind)


def test_ade20k_is_mmseg_mae_recipe_at_the_student_width():
    cfg = _cfg("ade20k")
    m, c = cfg.model, cfg.student_arch["embed_dim"]
    bb = m.backbone
    # the three differences the audit found, now as the peer has them
    assert m.decode_head.channels == c  # MAE-B: channels 768 = its width (was 512)
    assert bb.final_norm is False and bb.pos_resample == "bicubic"  # MAE: no final norm; plain bicubic
    # and what was already the same
    assert tuple(bb.out_indices) == (3, 5, 7, 11) and bb.drop_path_rate == 0.1 and tuple(bb.img_size) == (512, 512)
    assert m.neck.type == "Feature2Pyramid" and list(m.neck.rescales) == [4, 2, 1, 0.5]
    assert list(m.decode_head.in_channels) == [c] * 4 and m.decode_head.type == "UPerHead"
    assert (m.auxiliary_head.in_index, m.auxiliary_head.channels, m.auxiliary_head.loss_decode.loss_weight) == (2, 256, 0.4)
    assert m.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
    ow = cfg.optim_wrapper
    assert ow.optimizer == dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05)
    assert ow.paramwise_cfg.decay_rate == 0.65 and ow.paramwise_cfg.num_layers == 12
    warm, poly = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.end) == ("LinearLR", 1e-6, 1500)
    assert (poly.type, poly.power, poly.begin, poly.end, poly.eta_min) == ("PolyLR", 1.0, 1500, 160000, 0.0)
    assert cfg.train_dataloader.batch_size == 2 and cfg.train_cfg.max_iters == 160000
    crop = _step(cfg.train_dataloader.dataset.pipeline, "RandomCrop")
    assert tuple(crop.crop_size) == (512, 512) and crop.cat_max_ratio == 0.75


def test_ade20k_student_file_loads_the_same_either_way(tmp_path, make_student):
    """The recipe changes how the file is used (no final norm, plain bicubic), not what is read."""
    from transfer import ComadMAEViT

    path = make_student(tmp_path, "transfer")
    a = ComadMAEViT(student=path, img_size=128, out_indices=(5,), final_norm=False, pos_resample="bicubic")
    b = ComadMAEViT(student=path, img_size=128, out_indices=(5,))
    a.init_weights(), b.init_weights()
    assert a.load_report["dropped_keys"] == ["norm.bias", "norm.weight"] and b.load_report["dropped_keys"] == []
    assert a.load_report["missing_keys"] == b.load_report["missing_keys"] == []
    sa, sb = a.state_dict(), b.state_dict()
    assert all((sa[k] == sb[k]).all() for k in sa if k != "pos_embed") and "norm.weight" not in sa


def test_coco_lsj_is_vitdet_recipe_at_the_student_width():
    cfg = _cfg("coco-lsj")
    m, c = cfg.model, cfg.student_arch["embed_dim"]
    bb = m.backbone
    assert (bb.window_size, tuple(bb.window_block_indexes), bb.use_rel_pos) == (14, (0, 1, 3, 4, 6, 7, 9, 10), True)
    assert bb.use_cls_token is False and bb.final_norm is False and bb.pos_resample == "bicubic"
    assert tuple(bb.out_indices) == (-1,) and bb.drop_path_rate == 0.1 and tuple(bb.img_size) == (1024, 1024)
    assert m.neck.type == "SimpleFPN" and m.neck.backbone_channel == c
    assert list(m.neck.in_channels) == [c // 4, c // 2, c, c] and (m.neck.out_channels, m.neck.num_outs) == (256, 5)
    assert m.neck.norm_cfg.type == "LN2d" and m.rpn_head.num_convs == 2
    box, mask = m.roi_head.bbox_head, m.roi_head.mask_head
    assert (box.type, box.conv_out_channels, box.norm_cfg.type) == ("Shared4Conv1FCBBoxHead", 256, "LN2d")
    assert mask.norm_cfg.type == "LN2d"
    assert m.data_preprocessor.batch_augments == [dict(type="BatchFixedSizePad", size=(1024, 1024), pad_mask=True)]
    ow = cfg.optim_wrapper
    assert ow.type == "AmpOptimWrapper" and ow.optimizer == dict(type="AdamW", lr=1e-4, betas=(0.9, 0.999),
                                                                    weight_decay=0.1)
    assert ow.paramwise_cfg.decay_rate == 0.7
    warm, step = cfg.param_scheduler
    assert (warm.type, warm.start_factor, warm.begin, warm.end) == ("LinearLR", 0.001, 0, 250)
    assert (step.type, step.milestones, step.end, step.gamma) == ("MultiStepLR", [163889, 177546], 184375, 0.1)
    assert cfg.train_cfg.max_iters == 184375 and 8 * cfg.train_dataloader.batch_size == 64
    train = cfg.train_dataloader.dataset.pipeline
    assert tuple(_step(train, "RandomResize").ratio_range) == (0.1, 2.0)
    assert _step(train, "Pad").pad_val == dict(img=(114, 114, 114))
    # the worst difference: the test image is padded to the 64 x 64 token grid the model trained on
    test = cfg.test_dataloader.dataset.pipeline
    assert [t.type for t in test[:3]] == ["LoadImageFromFile", "Resize", "Pad"]
    assert tuple(_step(test, "Pad").size) == (1024, 1024) and _step(test, "Pad").pad_val == dict(img=(114, 114, 114))


def test_vitdet_model_builds_with_its_heads_and_norms(tmp_path, make_student):
    import torch
    from mmengine.config import ConfigDict
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.utils import import_modules_from_strings

    from transfer.cfg import fit_to_student, scale_sizes

    cfg = _cfg("coco-lsj")
    scale_sizes(cfg._cfg_dict, 0.125)  # 128 px: an 8 x 8 grid
    fit_to_student(cfg, dict(embed_dim=48, depth=6, num_heads=3, patch_size=16))
    cfg.model.backbone.window_block_indexes = (0, 1, 3, 4)
    cfg.model.backbone.window_size = 4
    cfg.model.backbone.init_cfg = dict(type="Pretrained", checkpoint=str(make_student(tmp_path, "transfer")))
    import_modules_from_strings(**cfg.custom_imports)
    init_default_scope("mmdet")
    model = MODELS.build(ConfigDict(cfg.model))
    model.init_weights()
    assert type(model.neck).__name__ == "SimpleFPN" and len(model.rpn_head.rpn_conv) == 2
    assert type(model.roi_head.bbox_head).__name__ == "Shared4Conv1FCBBoxHead"
    assert type(model.roi_head.bbox_head.shared_convs[0].norm).__name__ == "LN2d"
    assert type(model.roi_head.mask_head.convs[0].norm).__name__ == "LN2d"
    feats = model.extract_feat(torch.randn(1, 3, 128, 128))
    assert [tuple(f.shape) for f in feats] == [(1, 256, 32, 32), (1, 256, 16, 16), (1, 256, 8, 8), (1, 256, 4, 4),
                                               (1, 256, 2, 2)]


def test_ade20k_linear_is_dinov2s_frozen_linear_protocol():
    """Against facebookresearch/dinov2's dinov2_vits14_ade20k_linear_config.py (the 'lin.' head) and
    its 'ms' head (the last four blocks), single-scale."""
    lin, four = _cfg("ade20k-linear"), _cfg("ade20k-linear4")
    c = lin.student_arch["embed_dim"]
    for cfg in (lin, four):
        bb, head = cfg.model.backbone, cfg.model.decode_head
        assert bb.frozen is True and bb.final_norm == "all" and tuple(bb.out_indices) == (8, 9, 10, 11)
        assert (head.type, head.input_transform, head.dropout_ratio, head.num_classes) == ("BNHead", "resize_concat", 0, 150)
        assert cfg.model.get("neck") is None and cfg.model.get("auxiliary_head") is None
        assert cfg.optim_wrapper.optimizer == dict(type="AdamW", lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4)
        warm, poly = cfg.param_scheduler
        assert (warm.start_factor, warm.end, poly.power, poly.end) == (1e-6, 1500, 1.0, 40000)
        assert cfg.train_cfg.max_iters == 40000 and cfg.train_dataloader.batch_size == 2
        assert cfg.model.test_cfg == dict(mode="slide", crop_size=(512, 512), stride=(341, 341))
        rr = _step(cfg.train_dataloader.dataset.pipeline, "RandomResize")
        assert tuple(rr.scale) == (99999999, 512) and tuple(rr.ratio_range) == (0.5, 2.0)
    assert (list(lin.model.decode_head.in_index), lin.model.decode_head.channels) == ([3], c)
    assert (list(four.model.decode_head.in_index), four.model.decode_head.channels) == ([0, 1, 2, 3], 4 * c)


def test_a_frozen_backbone_stays_the_students(tmp_path, make_student):
    import torch

    from transfer import ComadMAEViT

    bb = ComadMAEViT(student=make_student(tmp_path, "transfer"), img_size=64, out_indices=(2, 5), frozen=True,
                     final_norm="all")
    assert not any(p.requires_grad for p in bb.parameters())  # before a DDP wrapper sees them
    bb.init_weights()
    bb.train()
    assert not bb.training  # eval mode: a feature extractor
    outs = bb(torch.randn(1, 3, 64, 64))
    torch.testing.assert_close(outs[0].mean(1), torch.zeros_like(outs[0].mean(1)), atol=1e-4, rtol=0)  # normed
    bb.assert_unchanged()
    with torch.no_grad():
        bb.layers[1].attn.qkv.weight.add_(1e-3)
    with pytest.raises(RuntimeError, match=r"frozen backbone changed during training: \[layers.1.attn.qkv.weight\]"):
        bb.assert_unchanged()
