"""The student as a dense backbone: strides, channels, equivalence with timm, strict loading."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from timm.models.vision_transformer import VisionTransformer

from comad.export import export_student
from comad.io import CheckpointError
from transfer import ComadMAEViT, SimpleFeaturePyramid
from comad.checkpoint import read_encoder as read_student


def _vit(dim: int = 48, depth: int = 4, heads: int = 3, img: int = 64, seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=img, patch_size=16, embed_dim=dim, depth=depth, num_heads=heads, num_classes=0).eval()


def _bb(**kw) -> ComadMAEViT:
    """The backbone with its student loaded (mmengine's Runner calls init_weights before training)."""
    bb = ComadMAEViT(**kw)
    bb.init_weights()
    return bb


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    vit = _vit()
    path = export_student(vit, tmp_path_factory.mktemp("student"))
    return vit, path


def test_strides_and_channels(student):
    vit, path = student
    bb = _bb(student=path, img_size=64, out_indices=(0, 1, 2, 3)).eval()
    outs = bb(torch.randn(2, 3, 96, 80))
    assert [tuple(o.shape) for o in outs] == [(2, 48, 6, 5)] * 4  # stride 16, backbone width
    # an input that is not a multiple of the patch is padded: ceil(H/16) x ceil(W/16)
    assert tuple(bb(torch.randn(1, 3, 70, 33))[-1].shape) == (1, 48, 5, 3)
    last = _bb(student=path, img_size=64, out_indices=(-1,)).eval()
    assert len(last(torch.randn(1, 3, 64, 64))) == 1


def test_matches_timm(student):
    """Block outputs equal timm's own forward on the same (exported) weights: timm resamples the
    224-px position embedding to the input grid on the fly, the backbone once at load."""
    _, path = student
    ref_vit = VisionTransformer(img_size=224, patch_size=16, embed_dim=48, depth=4, num_heads=3, num_classes=0,
                                dynamic_img_size=True).eval()
    ref_vit.load_state_dict(load_file(str(path)), strict=True)
    bb = _bb(student=path, img_size=64, out_indices=(1, 3)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        outs = bb(x)
        ref_last = ref_vit.forward_features(x)[:, 1:]
        t = ref_vit._pos_embed(ref_vit.patch_embed(x))
        for blk in ref_vit.blocks[:2]:
            t = blk(t)
    torch.testing.assert_close(outs[1].flatten(2).transpose(1, 2), ref_last, rtol=0, atol=1e-5)
    torch.testing.assert_close(outs[0].flatten(2).transpose(1, 2), t[:, 1:], rtol=0, atol=1e-5)


def test_pos_embed_resampled_bicubic(student):
    """The exported 14x14 grid (224 px) -> the crop grid, bicubic (antialiased, as timm), CLS slot untouched."""
    _, path = student
    pos = load_file(str(path))["pos_embed"]
    assert pos.shape == (1, 197, 48)  # exported students carry a 224-px, 197-token embedding
    bb = _bb(student=path, img_size=(96, 128), out_indices=(-1,))
    grid = pos[:, 1:].reshape(1, 14, 14, 48).permute(0, 3, 1, 2)
    ref = F.interpolate(grid, size=(6, 8), mode="bicubic", align_corners=False, antialias=True).permute(0, 2, 3, 1).reshape(1, 48, 48)
    torch.testing.assert_close(bb.pos_embed[:, 1:].detach(), ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bb.pos_embed[:, :1].detach(), pos[:, :1])
    assert "14x14 -> 6x8" in bb.load_report["pos_embed"]
    assert bb.load_report["missing_keys"] == [] and bb.load_report["unexpected_keys"] == []


def test_param_names_for_layer_decay(student):
    _, path = student
    names = [n for n, _ in _bb(student=path, img_size=64, out_indices=(-1,)).named_parameters()]
    assert {"cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight"} <= set(names)
    assert {n.split(".")[1] for n in names if n.startswith("layers.")} == {"0", "1", "2", "3"}
    assert not any(n.startswith("blocks.") for n in names)
    assert "MAE" in ComadMAEViT.__name__  # mmseg's LearningRateDecayOptimizerConstructor selects its ViT rule by name


def test_drop_path_linear(student):
    _, path = student
    bb = _bb(student=path, img_size=64, drop_path_rate=0.3, out_indices=(-1,))
    rates = [float(getattr(b.drop_path1, "drop_prob", 0.0)) for b in bb.layers]
    assert rates == pytest.approx([0.0, 0.1, 0.2, 0.3])


def test_pth_and_safetensors_agree(student):
    _, path = student
    a = _bb(student=path, img_size=64, out_indices=(-1,)).state_dict()
    b = _bb(student=path.with_name("student.pth"), img_size=64, out_indices=(-1,)).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_wrong_depth_names_file_and_keys(student):
    _, path = student
    with pytest.raises(CheckpointError) as e:
        _bb(student=path, img_size=64, depth=6, out_indices=(-1,))
    msg = str(e.value)
    assert str(path) in msg and "blocks.4.attn.qkv.weight" in msg and "depth: 4 in the file, 6 here" in msg


def test_wrong_width_names_file_and_keys(tmp_path):
    path = export_student(_vit(dim=64, heads=4), tmp_path)
    with pytest.raises(CheckpointError) as e:
        _bb(student=path, img_size=64, embed_dim=48, num_heads=4, out_indices=(-1,))
    msg = str(e.value)
    assert str(path) in msg and "embed_dim: 64 in the file, 48 here" in msg and "cls_token: file (1, 1, 64)" in msg


def test_missing_key_names_file_and_key(student, tmp_path):
    _, path = student
    sd = load_file(str(path))
    del sd["norm.weight"]
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    bad = tmp_path / "student.safetensors"
    save_file(sd, str(bad), metadata=meta)
    with pytest.raises(CheckpointError) as e:
        _bb(student=bad, img_size=64, out_indices=(-1,))
    assert str(bad) in str(e.value) and "Missing keys [norm.weight]" in str(e.value)


def test_unexpected_key_and_no_arch(student, tmp_path):
    _, path = student
    sd = load_file(str(path))
    sd["head.weight"] = torch.zeros(10, 48)
    bad = tmp_path / "student.safetensors"
    save_file(sd, str(bad), metadata={"format": "comad-student", "arch": json.dumps(read_student(path).arch)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \[head.weight\]"):
        _bb(student=bad, img_size=64, out_indices=(-1,))
    save_file(load_file(str(path)), str(bad), metadata={"format": "comad-student"})
    with pytest.raises(CheckpointError, match=r"student .*student.safetensors: its metadata has no complete 'arch'"):
        _bb(student=bad, img_size=64, out_indices=(-1,))


def test_extra_tokens_refused(student, tmp_path):
    _, path = student
    sd = load_file(str(path))
    sd["pos_embed"] = torch.cat([sd["pos_embed"], sd["pos_embed"][:, :4]], 1)  # 4 register-like tokens
    bad = tmp_path / "student.safetensors"
    save_file(sd, str(bad), metadata={"format": "comad-student", "arch": json.dumps(read_student(path).arch)})
    with pytest.raises(CheckpointError, match=r"pos_embed has shape \(1, 201, 48\).*197 tokens"):
        read_student(bad)


def test_the_student_file_only_initialises(student, tmp_path):
    """Built from the architecture alone, the backbone reads no file; init_weights loads the student."""
    vit, path = student
    gone = tmp_path / "gone" / "student.safetensors"
    arch = dict(patch_size=16, embed_dim=48, depth=4, num_heads=3, img_size=64, out_indices=(-1,))
    bb = ComadMAEViT(init_cfg=dict(type="Pretrained", checkpoint=str(gone)), **arch)  # no such file: not read
    assert bb.student_file == str(gone) and bb.load_report["student"] is None
    with pytest.raises(FileNotFoundError, match="gone/student.safetensors: no such file"):
        bb.init_weights()
    bb = ComadMAEViT(student=path, **arch)
    assert bb.init_cfg == dict(type="Pretrained", checkpoint=str(path))
    assert not torch.equal(bb.cls_token, vit.cls_token)  # random until init_weights
    bb.init_weights()
    assert torch.equal(bb.cls_token, vit.cls_token) and bb.load_report["student"] == str(path)
    with pytest.raises(ValueError, match="not both"):
        ComadMAEViT(student=path, init_cfg=dict(type="Pretrained", checkpoint=str(path)), **arch)
    with pytest.raises(ValueError, match=r"'embed_dim' not given and there is no student"):
        ComadMAEViT(patch_size=16, depth=4, num_heads=3)


def test_out_indices_must_end_at_last_block(student):
    _, path = student
    with pytest.raises(ValueError, match="end at the last block"):
        _bb(student=path, img_size=64, out_indices=(0, 1))


def test_simple_feature_pyramid_strides_channels():
    sfp = SimpleFeaturePyramid(in_channels=48)
    outs = sfp((torch.randn(2, 48, 8, 6),))  # a stride-16 map of a 128x96 image
    assert [tuple(o.shape) for o in outs] == [(2, 12, 32, 24), (2, 24, 16, 12), (2, 48, 8, 6), (2, 48, 4, 3)]
    assert sfp.out_channels == [12, 24, 48, 48]
    with pytest.raises(ValueError, match="last block's map only"):
        sfp((torch.randn(1, 48, 4, 4),) * 2)
    with pytest.raises(ValueError, match="divisible by 4"):
        SimpleFeaturePyramid(in_channels=50)


# ------------------------------------------------------------------ ViTDet's attention (issue 23)
def test_windowed_backbone_with_the_window_the_whole_grid_equals_the_global_one(student):
    """ViTDet's window attention over one window covering the whole grid, relative positions at
    their zero init, is global attention: the same maps (both without the CLS token, as ViTDet)."""
    _, path = student
    glob = _bb(student=path, img_size=64, out_indices=(1, 3), use_cls_token=False, pos_resample="bicubic").eval()
    win = _bb(student=path, img_size=64, out_indices=(1, 3), use_cls_token=False, pos_resample="bicubic",
              window_size=4, window_block_indexes=(0, 2), use_rel_pos=True).eval()
    assert win.load_report["dropped_keys"] == ["cls_token"] and win.load_report["added_keys"] == [
        f"layers.{i}.attn.rel_pos_{a}" for i in range(4) for a in "hw"]
    assert all((p == 0).all() for n, p in win.named_parameters() if ".rel_pos_" in n)  # zero-initialised
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(glob(x), win(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        small = _bb(student=path, img_size=64, out_indices=(3,), use_cls_token=False, pos_resample="bicubic",
                    window_size=2, window_block_indexes=(0, 2)).eval()(x)[0]
    assert (small - glob(x)[-1]).abs().max() > 1e-3  # 2x2 windows are not global attention


def test_pos_resample_plain_bicubic_as_the_peers_and_cls_dropped(student):
    _, path = student
    pos = read_student(path).state_dict["pos_embed"]  # (1, 1 + 14 * 14, 48)
    grid = pos[:, 1:].reshape(1, 14, 14, 48).permute(0, 3, 1, 2)
    for mode, aa in (("bicubic", False), ("bicubic-antialias", True)):
        bb = _bb(student=path, img_size=(96, 128), out_indices=(3,), pos_resample=mode,
                 use_cls_token=mode == "bicubic-antialias")
        ref = F.interpolate(grid, size=(6, 8), mode="bicubic", align_corners=False, antialias=aa).permute(0, 2, 3, 1)
        torch.testing.assert_close(bb.pos_embed[:, bb.prefix:], ref.reshape(1, 48, 48), rtol=0, atol=1e-5)
    assert (F.interpolate(grid, size=(6, 8), mode="bicubic", antialias=True)
            - F.interpolate(grid, size=(6, 8), mode="bicubic", antialias=False)).abs().max() > 1e-3
    with pytest.raises(ValueError, match="use_cls_token=False"):
        ComadMAEViT(student=path, out_indices=(3,), window_size=4, window_block_indexes=(0,))
    with pytest.raises(ValueError, match="pos_resample="):
        ComadMAEViT(student=path, out_indices=(3,), pos_resample="bilinear")
