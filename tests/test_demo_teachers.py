"""The demo's teachers are related by construction: one is another's linear image (plus noise)."""
from __future__ import annotations

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from comad.engine.launch import prepare_demo_teachers
from comad.teachers import load_teacher
from comad.teachers.synthetic import linear_image_encoder, random_encoder

ARCH = dict(embed_dim=16, depth=2, num_heads=2, patch_size=16, img_size=32)


def _vit(sd):
    vit = VisionTransformer(img_size=32, patch_size=16, embed_dim=16, depth=2, num_heads=2, num_classes=0)
    vit.load_state_dict(sd)
    return vit.eval()


def test_linear_image_encoder_permutes_and_rescales_the_output_exactly():
    g = torch.Generator().manual_seed(0)
    sd = random_encoder(16, 2, 2, 16, 32, g)
    new, perm, scale = linear_image_encoder(sd, torch.Generator().manual_seed(1))
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        a, b = _vit(sd).forward_features(x), _vit(new).forward_features(x)
    torch.testing.assert_close(b, a[..., perm] * scale, rtol=1e-4, atol=1e-5)
    assert not torch.equal(perm, torch.arange(16)) and (scale < 0).any() and (scale.abs() != 1).all()
    noisy = linear_image_encoder(sd, torch.Generator().manual_seed(1), noise=0.05)[0]
    with torch.no_grad():
        c = _vit(noisy).forward_features(x)
    rel = (c - b).norm() / b.norm()
    assert 0 < rel < 0.5


def test_prepare_demo_teachers_writes_the_relation_once_and_rewrites_for_another_spec(tmp_path):
    demo = dict(teacher_dir=str(tmp_path), teacher_arch=ARCH, teachers=[
        ("mae", "mae", "mae.pth"), ("ibot", "ibot", "ibot.pth", dict(linear_image_of="mae", noise=0.0)),
        ("mocov3", "mocov3", "moco.pth.tar")])
    prepare_demo_teachers(demo)
    t = {n: load_teacher(tmp_path / f, img_size=32, num_heads=2) for n, _, f, *_ in demo["teachers"]}
    x = torch.randn(16, 3, 32, 32)  # 64 tokens for 16 channels
    a, b, c = (t[n](x).reshape(-1, 16).double() for n in ("mae", "ibot", "mocov3"))

    def linear_fit_error(src, dst):
        return ((src @ torch.linalg.lstsq(src, dst).solution - dst).norm() / dst.norm()).item()

    assert linear_fit_error(a, b) < 1e-4  # ibot's tokens are mae's under an invertible linear map
    assert linear_fit_error(a, c) > 0.3  # mocov3's are not
    stamp = (tmp_path / "ibot.pth").stat().st_mtime_ns
    prepare_demo_teachers(demo)
    assert (tmp_path / "ibot.pth").stat().st_mtime_ns == stamp  # same spec: kept
    demo["teachers"][1] = ("ibot", "ibot", "ibot.pth", dict(linear_image_of="mae", noise=0.05))
    prepare_demo_teachers(demo)
    assert (tmp_path / "ibot.pth").stat().st_mtime_ns != stamp  # another spec: rewritten
    demo["teachers"][0] = ("mae", "mae", "mae.pth", dict(linear_image_of="mocov3"))
    with pytest.raises(ValueError, match=r"demo.teachers\[0\] \(mae\): linear_image_of='mocov3' must name an earlier"):
        prepare_demo_teachers(demo)
