"""The distiller with teachers whose patch size is not the student's: a patch-14 DINOv2-layout ViT
and stride-16 CNNs beside a patch-8 student, all on one 4 x 4 token grid (tiny random files in
the real layouts)."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

import comad.cpu_bf16 as cpu_bf16
from comad.distiller import CoMADDistiller
from comad.teachers.cnn import CNNTeacher
from comad.teachers.synthetic import write_cnn_checkpoint, write_dinov2_checkpoint

GRID, PATCH = 4, 8
IMG = GRID * PATCH  # the student's 32 px


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    write_dinov2_checkpoint(d / "dinov2.safetensors", embed_dim=64, depth=2, num_heads=2, img_size=14 * 6, init="scaled")
    write_cnn_checkpoint("torchvision_mobilenet_v2", d / "mobilenet_v2.pth", seed=1)
    write_cnn_checkpoint("efficientnet_lite0", d / "efficientnet_lite0.pth", seed=2)
    return {"dinov2": d / "dinov2.safetensors", "mnv2": d / "mobilenet_v2.pth", "lite0": d / "efficientnet_lite0.pth"}


def make(files, names=("dinov2", "mnv2", "lite0"), dim=32, **kw):
    teachers = [dict(name=n, checkpoint=str(files[n]), **({"num_heads": 2, "layer": 0} if n == "dinov2" else {}))
                for n in names]
    args = dict(teachers=teachers, student=dict(arch=dict(embed_dim=dim, depth=1, num_heads=2, patch_size=PATCH)),
                decoder=dict(depth=1, num_heads=2), img_size=IMG, teacher_precision="fp32",
                masking=dict(teacher_keep=[0.5, 0.75, 1.0][: len(names)]), adapter=dict(fit_images=2))
    args.update(kw)
    return CoMADDistiller(**args)


def test_each_teacher_at_its_own_size_on_the_students_grid_and_a_step_trains(files):
    torch.manual_seed(0)
    m = make(files)
    assert [t.img_size for t in m.teachers] == [14 * GRID, 16 * GRID, 16 * GRID]  # 56, 64, 64 px
    assert [t.patch_size for t in m.teachers] == [14, 16, 16] and all(t.num_positions == GRID ** 2 for t in m.teachers)
    assert m.teachers[0].load_info["pos_embed"] == "resampled 6x6 -> 4x4 (bicubic, no antialias)"
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    masks = m.make_masks(2, x.device, step=0)
    toks = m.teacher_tokens(x, masks)
    for t, layer, idx, tok in zip(m.teachers, m.teacher_layers, masks.teachers, toks):
        view = F.interpolate(x, size=(t.img_size,) * 2, mode="bilinear", antialias=True, align_corners=False)
        assert torch.equal(tok, t(view, idx, layers=(layer,)))  # the same crop, resized once for the teacher
        assert tok.shape == (2, idx.shape[1], t.embed_dim) and not tok.requires_grad
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    out = m(x, mode="loss")
    assert {"loss_token", "loss_map", "gate_shared_dinov2", "gate_shared_mnv2", "gate_shared_lite0"} <= set(out)
    assert all(torch.isfinite(v) for v in out.values())
    before = m.student.patch_embed.proj.weight.detach().clone()
    (out["loss_token"] + out["loss_map"]).backward()
    opt.step()
    assert not torch.equal(before, m.student.patch_embed.proj.weight)
    assert all(p.grad is None for t in m.teachers for p in t.parameters())
    assert not m.alignment.pending  # fitted on the positions every teacher saw (fit_images=2)


def test_shared_tokens_give_the_same_losses_as_the_distillers_own_forward(files):
    """losses_from_tokens on tokens computed elsewhere is the method's one code path."""
    torch.manual_seed(0)
    a = make(files)
    torch.manual_seed(0)
    b = make(files)
    x = torch.randn(2, 3, IMG, IMG)
    masks = a.make_masks(2, x.device, step=3)
    own = a.compute_losses(x, masks)
    shared = b.losses_from_tokens(x, masks, a.teacher_tokens(x, masks))
    assert own.keys() == shared.keys() and all(torch.equal(own[k], shared[k]) for k in own)


def test_cnn_teachers_get_the_preprocessors_normalisation(files):
    import comad.engine  # noqa: F401  (registers ComadDataPreprocessor)

    m = make(files, names=("lite0",), data_preprocessor=dict(type="ComadDataPreprocessor", mean=(0.5,) * 3,
                                                               std=(0.5,) * 3))
    (t,) = m.teachers
    assert isinstance(t, CNNTeacher) and not t.renormalise  # the batches are in [-1, 1], as its weights want
    assert make(files, names=("lite0",)).teachers[0].renormalise  # ImageNet-normalised batches are mapped


def test_pca_init_for_a_teacher_narrower_than_the_student(files):
    m = make(files, names=("mnv2",), dim=128, adapter=dict(align="none", init="pca"))
    out = m(torch.randn(2, 3, IMG, IMG), mode="loss")
    w = m.adapters[0].proj.weight
    assert w.shape == (128, 96) and torch.equal(w[96:], torch.zeros(32, 96)) and not m.adapters[0].needs_pca
    assert torch.allclose(w.T @ w, torch.eye(96), atol=1e-4) and torch.isfinite(out["loss_map"])


def test_bf16_teachers_on_a_cpu_without_bf16_units_warn_once(files, monkeypatch):
    monkeypatch.setattr(cpu_bf16, "cpu_has_fast_bf16", lambda flags=None, machine=None: False)
    monkeypatch.setattr(cpu_bf16, "_warned", set())
    m = make(files, names=("mnv2",), teacher_precision="bf16")
    with pytest.warns(RuntimeWarning, match=r"model.teacher_precision='bf16'.*model.teacher_precision='amp'"):
        m(torch.randn(1, 3, IMG, IMG), mode="loss")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m(torch.randn(1, 3, IMG, IMG), mode="loss")  # once per process
