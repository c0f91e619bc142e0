"""Loading exported students and user timm ViT checkpoints into timm models."""
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from comad.checkpoint import load_vit as load_student
from comad.export import export_student
from comad.io import CheckpointError


def _vit(**kw):
    torch.manual_seed(0)
    args = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    args.update(kw)
    return VisionTransformer(**args).eval()


@pytest.mark.parametrize("fname", ["student.safetensors", "student.pth"])
def test_exported_student_loads_strictly_and_matches(tmp_path, fname):
    vit = _vit()
    export_student(vit, tmp_path / "student", img_size=None)
    loaded = load_student(tmp_path / "student" / fname)
    x = torch.randn(2, 3, 32, 32)
    assert loaded.report["arch_source"] == "metadata"
    assert loaded.report["missing_keys"] == [] and loaded.report["unexpected_keys"] == []
    assert loaded.report["pos_embed"] == "kept 4x4"
    torch.testing.assert_close(loaded.model.eval().forward_features(x), vit.forward_features(x))


def test_img_size_override_resamples_pos_embed(tmp_path):
    export_student(_vit(), tmp_path, img_size=None)
    loaded = load_student(tmp_path / "student.safetensors", img_size=16)
    assert loaded.model.pos_embed.shape == (1, 1 + 4, 32)
    assert loaded.report["pos_embed"].startswith("resampled 4x4 -> 2x2")
    assert loaded.model(torch.randn(1, 3, 16, 16)).shape == (1, 32)


def test_user_checkpoint_arch_from_shapes_head_dropped(tmp_path):
    # a DeiT-style release: {'model': state dict with a classifier}, heads = dim // 64
    vit = _vit(embed_dim=128, num_heads=2, num_classes=10)
    path = tmp_path / "deit_like.pth"
    torch.save({"model": vit.state_dict()}, path)
    loaded = load_student(path)
    assert loaded.arch["embed_dim"] == 128 and loaded.arch["depth"] == 2 and loaded.arch["num_heads"] == 2
    assert loaded.arch["img_size"] == 32 and loaded.arch["patch_size"] == 8
    assert loaded.report["dropped_classifier_keys"] == ["head.bias", "head.weight"]
    assert "num_heads = embed_dim // 64" in loaded.report["arch_source"]
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.model.eval().forward_features(x), vit.forward_features(x))


def test_num_heads_cannot_be_guessed_for_odd_width(tmp_path):
    torch.save(_vit(embed_dim=48, num_heads=3).state_dict(), tmp_path / "w48.pth")
    with pytest.raises(CheckpointError, match="cannot infer num_heads for embed_dim 48"):
        load_student(tmp_path / "w48.pth")
    loaded = load_student(tmp_path / "w48.pth", num_heads=3)
    assert loaded.arch["num_heads"] == 3 and loaded.arch_source == "shapes (num_heads given)"


def test_finetune_model_reports_fresh_head_and_fc_norm(tmp_path):
    export_student(_vit(), tmp_path, img_size=None)
    loaded = load_student(tmp_path / "student.safetensors", num_classes=5, global_pool="avg")
    assert sorted(loaded.report["missing_keys"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert sorted(loaded.report["unexpected_keys"]) == ["norm.bias", "norm.weight"]


def test_bad_files_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.safetensors"):
        load_student(tmp_path / "nothere.safetensors")
    sd = _vit().state_dict()
    sd.pop("blocks.1.mlp.fc2.weight")
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks.1.mlp.fc2.weight'\]"):
        load_student(tmp_path / "broken.pth", num_heads=2)
    torch.save({"something": torch.zeros(3)}, tmp_path / "notvit.pth")
    with pytest.raises(CheckpointError, match="not a timm VisionTransformer state dict"):
        load_student(tmp_path / "notvit.pth")
