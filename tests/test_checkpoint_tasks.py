"""A user's timm ViT-Tiny-shaped state dict and a DeiT-style ``{'model': ...}`` release (with its
classifier) go through every benchmark task like an exported student: ade20k (the DeiT-style file:
the frozen ade20k-linear probe) and coco (tiny demo sets, 2 iterations) and the ImageNet k-NN and
cached linear probes, through ``transfer.run``."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from transfer.metrics_io import read_metrics
from transfer.run import main

DIM, DEPTH = 64, 6  # 1 head (64 // 64); 6 blocks: the ade20k pyramid blocks (3, 5, 7, 11) map to (1, 2, 3, 5)
FORMS = {"plain": ("timm", []), "deit": ("mae", ["head.bias", "head.weight"])}
SEG = {"plain": "ade20k", "deit": "ade20k-linear"}  # the frozen DINOv2 probe runs any file the loader reads


@pytest.fixture(scope="module")
def user_files(tmp_path_factory) -> dict[str, Path]:
    """A plain timm state dict (no metadata) and a DeiT-style release with a 10-class head."""
    root = tmp_path_factory.mktemp("user_students")
    torch.manual_seed(0)
    plain = VisionTransformer(img_size=64, patch_size=16, embed_dim=DIM, depth=DEPTH, num_heads=1, num_classes=0)
    torch.manual_seed(1)
    deit = VisionTransformer(img_size=64, patch_size=16, embed_dim=DIM, depth=DEPTH, num_heads=1, num_classes=10)
    torch.save(plain.state_dict(), root / "vit_tiny_like.pth")
    torch.save({"model": deit.state_dict()}, root / "deit_tiny_like.pth")
    return {"plain": root / "vit_tiny_like.pth", "deit": root / "deit_tiny_like.pth"}


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory) -> Path:
    pytest.importorskip("mmseg")
    from transfer.mm_demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "transfer", n_det_train=8, n_det_val=4)


@pytest.mark.heavy
@pytest.mark.mm
@pytest.mark.parametrize("form", list(FORMS))
def test_user_checkpoint_through_ade20k_and_coco(user_files, demo_root, tmp_path, form):
    student, seg = user_files[form], SEG[form]
    out = main(["--demo", "--student", str(student), "--data-root", str(demo_root), "--work-dir", str(tmp_path),
                "--max-iters", "2", seg, "coco"])
    for task in (seg, "coco"):
        rec = read_metrics(tmp_path / task)
        assert rec["student"] == str(student) and rec["demo"] is True and rec["metrics"]
        assert rec["protocol"]["missing_keys"] == [] and rec["protocol"]["unexpected_keys"] == []
        assert rec["backbone_load"]["student"] == str(student)
        changes = rec["config_changes"]
        assert "model.backbone.embed_dim: 192 -> 64 (student arch)" in changes
        assert "model.backbone.num_heads: 3 -> 1 (student arch)" in changes
        assert (tmp_path / task / "iter_2.pth").is_file()
    assert 0.0 <= out[seg]["metrics"]["mIoU"] <= 100.0
    if seg == "ade20k-linear":  # the backbone stayed the student's (asserted by the task), the head alone trained
        rec = read_metrics(tmp_path / seg)
        assert rec["protocol"]["frozen"] is True and tuple(rec["protocol"]["pyramid_blocks"]) == (2, 3, 4, 5)
    assert all(0.0 <= v <= 1.0 for v in out["coco"]["metrics"].values())


@pytest.mark.heavy
@pytest.mark.parametrize("form", list(FORMS))
def test_user_checkpoint_through_the_imagenet_probes(user_files, tmp_path_factory, tmp_path, form):
    student = user_files[form]
    fmt, dropped = FORMS[form]
    demo = tmp_path_factory.getbasetemp() / "imagenet-demo"  # shared by both forms: made once
    out = main(["--demo", "--student", str(student), "--work-dir", str(tmp_path), "--max-iters", "2",
                "imagenet-knn", "imagenet-linear-cached", "--", "--cfg-options", f"demo_data.data_dir={demo}",
                "demo_data.per_class=10"])
    for task in ("imagenet-knn", "imagenet-linear-cached"):
        assert 0.0 <= out[task]["metrics"]["top1"] <= out[task]["metrics"]["top5"] <= 100.0
        rec = read_metrics(tmp_path / task)
        load = rec["load_report"]
        assert load["format"] == fmt and load["arch_source"] == "shapes (num_heads = embed_dim // 64)"
        assert load["dropped_classifier_keys"] == dropped
        assert load["missing_keys"] == [] and load["unexpected_keys"] == []
        assert rec["protocol"]["pos_embed"] == "resampled 4x4 -> 2x2 (bicubic, antialias)"
