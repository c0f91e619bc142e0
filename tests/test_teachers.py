"""Teachers: official checkpoint layouts -> strict timm ViT, masked forward, clear errors."""
from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

import pytest
import torch
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from comad.io import CheckpointError, safe_torch_load
from comad.teachers import Teacher, convert_state_dict, detect_format, load_teacher
from comad.teachers.synthetic import write_checkpoint

DIM, DEPTH, IMG, PATCH = 64, 2, 64, 16
N = (IMG // PATCH) ** 2
TOL = 1e-5

# format written -> format that 'auto' reports (mocov3_deit has MAE's exact layout)
LAYOUTS = {"mae": "mae", "mocov3": "mocov3", "mocov3_deit": "mae", "ibot": "ibot",
           "ibot_teacher": "ibot_teacher", "timm": "timm"}


def reference(sd: dict[str, torch.Tensor], img_size: int = IMG, num_heads: int = 1) -> VisionTransformer:
    """timm's own ViT with the same weights (strict load)."""
    ref = VisionTransformer(img_size=img_size, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=num_heads,
                            num_classes=0)
    ref.load_state_dict(sd, strict=True)
    return ref.eval()


def images(b: int = 3, seed: int = 1, size: int = IMG) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict[str, torch.Tensor]]]:
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for i, fmt in enumerate(LAYOUTS):
        path = root / f"{fmt}.pth"
        out[fmt] = (path, write_checkpoint(fmt, path, embed_dim=DIM, depth=DEPTH, img_size=IMG, seed=i))
    return out


def write_raw(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


# --------------------------------------------------------------------------- layouts


def test_fixture_layouts_are_the_official_ones(files):
    mae = safe_torch_load(files["mae"][0])
    assert list(mae) == ["model"] and "cls_token" in mae["model"] and mae["model"]["pos_embed"].shape == (1, N + 1, DIM)
    moco = safe_torch_load(files["mocov3"][0])
    assert set(moco) == {"epoch", "arch", "state_dict", "optimizer"}
    sd = moco["state_dict"]
    assert "module.base_encoder.head.1.running_mean" in sd and "module.base_encoder.head.7.running_var" in sd
    assert "module.base_encoder.head.7.weight" not in sd  # last BN has affine=False
    assert any(k.startswith("module.momentum_encoder.blocks.") for k in sd)
    assert any(k.startswith("module.predictor.") for k in sd)
    assert not torch.equal(sd["module.base_encoder.blocks.0.attn.qkv.weight"], sd["module.momentum_encoder.blocks.0.attn.qkv.weight"])
    assert any(torch.is_tensor(v) for st in moco["optimizer"]["state"].values() for v in st.values())
    deit = safe_torch_load(files["mocov3_deit"][0])
    assert list(deit) == ["model"] and not any(k.startswith("head.") for k in deit["model"])
    ibot = safe_torch_load(files["ibot"][0])
    assert {"student", "teacher", "optimizer", "epoch", "args"} <= set(ibot)
    assert isinstance(ibot["args"], argparse.Namespace) and ibot["args"].patch_size == PATCH
    assert "masked_embed" not in {k[len("backbone."):] for k in ibot["teacher"]}
    assert "module.backbone.masked_embed" in ibot["student"] and "head.last_layer.weight_v" in ibot["teacher"]
    assert list(safe_torch_load(files["ibot_teacher"][0])) == ["state_dict"]
    assert "head.weight" in safe_torch_load(files["timm"][0])


def test_namespace_needs_the_allow_list(files):
    with pytest.raises(Exception, match="Namespace"):
        torch.load(files["ibot"][0], weights_only=True)  # plain weights_only refuses the args


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_auto_detect_and_convert(files, fmt):
    path, expected = files[fmt]
    raw = safe_torch_load(path)
    assert detect_format(raw, str(path)) == LAYOUTS[fmt]
    got_fmt, sd = convert_state_dict(raw, "auto", None, str(path))
    assert got_fmt == LAYOUTS[fmt]
    assert sd.keys() == expected.keys()
    assert all(torch.equal(sd[k], v) for k, v in expected.items())


@pytest.mark.parametrize("fmt", list(LAYOUTS))
def test_teacher_equals_timm_reference(files, fmt):
    path, sd = files[fmt]
    teacher = load_teacher(path)
    assert isinstance(teacher, Teacher) and teacher.name == LAYOUTS[fmt] and teacher.source == str(path)
    assert (teacher.embed_dim, teacher.num_positions) == (DIM, N)
    assert teacher.load_info["missing_keys"] == [] and teacher.load_info["unexpected_keys"] == []
    ref = reference(sd)
    x = images()
    with torch.no_grad():
        full = ref.forward_features(x)
    out = teacher(x)
    assert out.shape == (3, N, DIM) and out.dtype == torch.float32
    assert (out - full[:, 1:]).abs().max().item() < TOL
    with_cls = teacher(x, return_cls=True)
    assert (with_cls - full).abs().max().item() < TOL


def test_forced_format_names_the_teacher(files):
    assert load_teacher(files["mocov3_deit"][0], format="mocov3_deit").name == "mocov3_deit"


@pytest.mark.parametrize("fmt,encoder,default", [("mocov3", "momentum", "base"), ("ibot", "student", "teacher")])
def test_encoder_option(tmp_path, fmt, encoder, default):
    path = tmp_path / f"{fmt}.pth"
    chosen = write_checkpoint(fmt, path, embed_dim=DIM, depth=DEPTH, img_size=IMG, return_encoder=encoder)
    dflt = write_checkpoint(fmt, tmp_path / "d.pth", embed_dim=DIM, depth=DEPTH, img_size=IMG)
    t = load_teacher(path, encoder=encoder)
    assert t.encoder == encoder and load_teacher(path).encoder == default
    got = t.vit.state_dict()
    assert all(torch.equal(got[k], v) for k, v in chosen.items())
    assert not torch.equal(got["blocks.0.attn.qkv.weight"], dflt["blocks.0.attn.qkv.weight"])
    x = images()
    assert (t(x) - reference(chosen).forward_features(x)[:, 1:]).abs().max().item() < TOL


def test_mae_full_pretrain_checkpoint_drops_decoder(tmp_path):
    path = tmp_path / "mae_visualize.pth"
    sd = write_checkpoint("mae", path, embed_dim=DIM, depth=DEPTH, img_size=IMG, decoder=True)
    raw = safe_torch_load(path)
    assert "mask_token" in raw["model"] and "decoder_embed.weight" in raw["model"]
    t = load_teacher(path)
    assert set(t.vit.state_dict()) == set(sd)


def test_safetensors_timm_file_loads(tmp_path):
    path = tmp_path / "vit.safetensors"
    sd = write_checkpoint("timm", path, embed_dim=DIM, depth=DEPTH, img_size=IMG)
    t = load_teacher(path)
    x = images()
    assert t.name == "timm" and (t(x) - reference(sd).forward_features(x)[:, 1:]).abs().max().item() < TOL


# --------------------------------------------------------------------------- masked forward


def manual_kept_forward(ref: VisionTransformer, x: torch.Tensor, keep: torch.Tensor, upto: int | None = None) -> torch.Tensor:
    """Per-sample reference: patch tokens + pos, pick the kept ones, prepend CLS, run blocks."""
    outs = []
    with torch.no_grad():
        tokens = ref.patch_embed(x) + ref.pos_embed[:, 1:]
        cls = ref.cls_token + ref.pos_embed[:, :1]
        for b in range(x.shape[0]):
            seq = torch.cat([cls[0], tokens[b, keep[b]]], 0)[None]
            blocks = ref.blocks if upto is None else ref.blocks[: upto + 1]
            for blk in blocks:
                seq = blk(seq)
            outs.append((ref.norm(seq) if upto is None else seq)[0, 1:])
    return torch.stack(outs)


def test_all_kept_equals_full_forward(files):
    path, sd = files["mae"]
    t = load_teacher(path)
    x = images()
    keep = torch.arange(N).expand(3, N).clone()
    assert (t(x, keep) - t(x)).abs().max().item() < TOL
    assert (t(x, keep) - reference(sd).forward_features(x)[:, 1:]).abs().max().item() < TOL


@pytest.mark.parametrize("k", [1, 5, N - 1])
def test_subset_equals_reference_on_gathered_tokens(files, k):
    path, sd = files["ibot"]
    t = load_teacher(path)
    ref = reference(sd)
    x = images()
    g = torch.Generator().manual_seed(k)
    keep = torch.stack([torch.randperm(N, generator=g)[:k] for _ in range(3)])  # unsorted, per sample
    out = t(x, keep)
    assert out.shape == (3, k, DIM)
    assert (out - manual_kept_forward(ref, x, keep)).abs().max().item() < TOL
    # differs from taking the kept positions of the full forward (attention saw fewer tokens)
    full_at_kept = ref.forward_features(x)[:, 1:].gather(1, keep[..., None].expand(-1, -1, DIM))
    assert (out - full_at_kept).abs().max().item() > 1e-3


def test_intermediate_layers_and_cls(files):
    path, sd = files["mocov3"]
    t = load_teacher(path)
    ref = reference(sd)
    x = images()
    keep = torch.tensor([[0, 3, 7, 9], [15, 1, 2, 4], [5, 6, 8, 10]])
    first, last = t(x, keep, layers=(0, -1))
    assert (first - manual_kept_forward(ref, x, keep, upto=0)).abs().max().item() < TOL
    assert (last - manual_kept_forward(ref, x, keep)).abs().max().item() < TOL
    assert torch.equal(t(x, keep, layers=0), first)
    with_cls = t(x, keep, return_cls=True)
    assert with_cls.shape == (3, 1 + 4, DIM) and torch.allclose(with_cls[:, 1:], last, atol=TOL)


def test_frozen_eval_no_autograd(files):
    t = load_teacher(files["timm"][0])
    assert all(not p.requires_grad for p in t.parameters())
    t.train()
    assert t.training and not t.vit.training and not any(m.training for m in t.vit.modules())
    x = images().requires_grad_(True)
    out = t(x)
    assert not out.requires_grad and out.grad_fn is None


def test_forward_input_errors(files):
    t = load_teacher(files["timm"][0])
    x = images()
    with pytest.raises(ValueError, match="keep_idx must be int64"):
        t(x, torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"keep_idx must be \(B, K\) with B=3"):
        t(x, torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="more than the 16"):
        t(x, torch.zeros(3, N + 1, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range for a ViT of depth 2"):
        t(x, layers=(5,))
    with pytest.raises(ValueError, match=r"images are \(32, 32\), the teacher takes 64x64"):
        t(images(size=32))


@pytest.mark.parametrize("patch, size", [(16, 64), (8, 32)])
def test_embed_patches_is_timm_patch_embed_as_one_matmul(patch, size):
    from timm.layers import PatchEmbed

    from comad.models.vit import embed_patches

    torch.manual_seed(patch)
    pe = PatchEmbed(img_size=size, patch_size=patch, embed_dim=24)
    x = torch.randn(2, 3, size, size, requires_grad=True)
    ref, got = pe(x), embed_patches(pe, x)
    assert got.shape == ref.shape == (2, (size // patch) ** 2, 24)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
    g_ref = torch.autograd.grad(ref.square().sum(), [x, pe.proj.weight, pe.proj.bias])
    g_got = torch.autograd.grad(embed_patches(pe, x).square().sum(), [x, pe.proj.weight, pe.proj.bias])
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    # other input sizes and padded embeddings go through timm's module (and its own checks)
    with pytest.raises(AssertionError, match="doesn't match model"):
        embed_patches(pe, torch.randn(1, 3, size + patch, size + patch))
    padded = PatchEmbed(img_size=size, patch_size=patch, embed_dim=24, dynamic_img_pad=True, strict_img_size=False)
    odd = torch.randn(1, 3, size - 3, size - 3)
    assert torch.equal(embed_patches(padded, odd), padded(odd))


def test_precision_bf16_fp32_and_outer_autocast(files):
    path, sd = files["ibot"]
    x = images()
    keep = torch.tensor([[0, 3, 7, 9], [15, 1, 2, 4], [5, 6, 8, 10]])
    exact = manual_kept_forward(reference(sd), x, keep)
    t = load_teacher(path, precision="bf16")
    assert t.precision == "bf16" and not t.amp and {p.dtype for p in t.parameters()} == {torch.bfloat16}
    out = t(x, keep)
    assert out.dtype == torch.float32 and not out.requires_grad
    rel = ((out - exact).norm() / exact.norm()).item()
    assert 1e-4 < rel < 3e-2  # bf16 all the way (not exact), and close
    # back to fp32 weights (keeping their bf16 rounding): fp32 arithmetic on the rounded weights
    t.set_precision("fp32")
    assert {p.dtype for p in t.parameters()} == {torch.float32}
    rounded = reference({k: v.bfloat16().float() for k, v in sd.items()})
    assert (t(x, keep) - manual_kept_forward(rounded, x, keep)).abs().max().item() < TOL
    # an fp32 teacher ignores the caller's autocast; an amp teacher off CUDA follows it
    f32 = load_teacher(path, precision="fp32")
    amp = load_teacher(path)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (f32(x, keep) - exact).abs().max().item() < TOL
        assert (amp(x, keep) - exact).abs().max().item() > 1e-4
    assert (amp(x, keep) - exact).abs().max().item() < TOL
    amp.amp = False
    assert amp.precision == "fp32"
    with pytest.raises(ValueError, match=r"precision must be one of \('amp', 'bf16', 'fp32'\), got 'fp16'"):
        load_teacher(path, precision="fp16")


def test_img_size_resamples_pos_embed(files):
    path, sd = files["mae"]
    t = load_teacher(path, img_size=32)
    assert t.num_positions == 4 and t.img_size == 32
    ref = VisionTransformer(img_size=32, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=1, num_classes=0)
    ref.load_state_dict(checkpoint_filter_fn(dict(sd), ref), strict=True)  # timm's own resampling
    x = images(size=32)
    assert (t(x) - ref.eval().forward_features(x)[:, 1:]).abs().max().item() < TOL


def test_num_heads(files, tmp_path):
    path, sd = files["mae"]
    t = load_teacher(path, num_heads=2)
    assert t.vit.blocks[0].attn.num_heads == 2
    x = images()
    assert (t(x) - reference(sd, num_heads=2).forward_features(x)[:, 1:]).abs().max().item() < TOL
    p96 = tmp_path / "w96.pth"
    write_checkpoint("mae", p96, embed_dim=96, depth=1, img_size=IMG)
    with pytest.raises(ValueError, match="embed_dim 96 is not a multiple of 64; give num_heads"):
        load_teacher(p96)
    assert load_teacher(p96, num_heads=3).vit.blocks[0].attn.num_heads == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_autocast(files):
    path, sd = files["ibot"]
    t = load_teacher(path).cuda()
    x = images().cuda()
    keep = torch.arange(N, device="cuda").expand(3, N).clone()
    out = t(x, keep)
    ref = reference(sd).cuda()
    with torch.no_grad():
        exact = ref.forward_features(x)[:, 1:]
    assert out.dtype == torch.float32 and not out.requires_grad
    err = (out - exact).abs().max().item()
    assert 0 < err < 0.1  # bf16 autocast was on (not bit-exact) and close
    t.amp = False
    assert (t(x, keep) - exact).abs().max().item() < 1e-4


# --------------------------------------------------------------------------- errors


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("these are not weights\n")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: not a torch checkpoint; it starts with b'these are"):
        load_teacher(p)
    lfs = tmp_path / "mae_pretrain_vit_base.pth"
    lfs.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 343249891\n")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(lfs))}: not a torch checkpoint \(a Git LFS pointer"):
        load_teacher(lfs)


def test_truncated_and_empty_and_missing(files, tmp_path):
    data = files["mae"][0].read_bytes()
    p = tmp_path / "cut.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}.*truncated"):
        load_teacher(p)
    e = tmp_path / "empty.pth"
    e.write_bytes(b"")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(e))}: the file is empty"):
        load_teacher(e)
    with pytest.raises(FileNotFoundError, match="nope.pth: no such file"):
        load_teacher(tmp_path / "nope.pth")


def test_unknown_layout_lists_keys(tmp_path):
    p = write_raw({"weights": {"layer1.conv.weight": torch.zeros(2, 2)}, "step": 3}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: unknown layout.*'weights', 'step'.*layer1\.conv\.weight.*Known layouts: mocov3"):
        load_teacher(p)
    q = write_raw([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(q))}: unknown layout.*holds a list"):
        load_teacher(q)


def test_vit_small_where_vit_base_configured(tmp_path):
    p = tmp_path / "vits.pth"
    write_checkpoint("mae", p, embed_dim=384, depth=12, img_size=32)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: expected embed_dim=768, depth=12, patch_size=16 \(vit_base\) "
                                              r"but the file holds embed_dim=384, depth=12, patch_size=16 \(vit_small\)"):
        load_teacher(p, arch="vit_base")


def test_vit_large_width_where_vit_base_configured(tmp_path):
    p = tmp_path / "vitl.pth"
    write_checkpoint("ibot_teacher", p, embed_dim=1024, depth=1, img_size=32)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: expected .*embed_dim=768.* but the file holds embed_dim=1024, depth=1.*mismatch in embed_dim, depth"):
        load_teacher(p, arch="vit_base")


def test_arch_dict_expectation(files):
    path = files["mae"][0]
    assert load_teacher(path, arch=dict(embed_dim=DIM, depth=DEPTH)).embed_dim == DIM
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(path))}: expected embed_dim=64, depth=3.*file holds embed_dim=64, depth=2"):
        load_teacher(path, arch=dict(embed_dim=DIM, depth=3))
    with pytest.raises(ValueError, match=r"arch has unknown keys \['heads'\]"):
        load_teacher(path, arch=dict(heads=4))
    with pytest.raises(ValueError, match="arch 'vit_giant' is not known"):
        load_teacher(path, arch="vit_giant")


def test_patch_size_not_16(tmp_path):
    p = tmp_path / "p8.pth"
    sd = write_checkpoint("timm", p, embed_dim=DIM, depth=DEPTH, patch_size=8, img_size=32)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: patch size is not 16; expected patch_size=16 but the file holds .*patch_size=8"):
        load_teacher(p)
    t = load_teacher(p, patch_size=8)  # the expectation is an option
    assert t.patch_size == 8 and t.num_positions == 16 and set(t.vit.state_dict()) == set(sd)


def test_missing_blocks(tmp_path):
    p = tmp_path / "holes.pth"
    sd = write_checkpoint("mae", tmp_path / "full.pth", embed_dim=DIM, depth=4, img_size=IMG)
    write_raw({"model": {k: v for k, v in sd.items() if not k.startswith(("blocks.1.", "blocks.2."))}}, p)
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: missing blocks \[1, 2\]"):
        load_teacher(p)


def test_missing_and_unexpected_keys_are_reported(files, tmp_path):
    sd = files["timm"][1]
    p = write_raw({k: v for k, v in sd.items() if k != "norm.weight"}, tmp_path / "nonorm.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: not an exact ViT encoder; missing keys \['norm.weight'\], unexpected keys \[\]"):
        load_teacher(p)
    q = write_raw({**sd, "dist_token": torch.zeros(1, 1, DIM)}, tmp_path / "deit_distilled.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(q))}: .*missing keys \[\], unexpected keys \['dist_token'\]"):
        load_teacher(q)
    r = write_raw({**sd, "blocks.0.mlp.fc1.weight": torch.zeros(3, DIM)}, tmp_path / "shape.pth")
    with pytest.raises(CheckpointError, match=rf"(?s){re.escape(str(r))}: tensor shapes do not fit.*size mismatch for blocks.0.mlp.fc2.weight"):
        load_teacher(r)


def test_unaccounted_keys_in_official_layout(files, tmp_path):
    raw = safe_torch_load(files["mocov3"][0])
    raw["state_dict"]["module.queue"] = torch.zeros(4)
    p = write_raw(raw, tmp_path / "moco_extra.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: keys that the mocov3 layout does not account for.*module\.queue"):
        load_teacher(p)


def test_conv_stem_refused(tmp_path):
    p = tmp_path / "vit-conv-b.pth.tar"
    write_checkpoint("mocov3", p, embed_dim=DIM, depth=DEPTH, img_size=IMG, conv_stem=True)
    assert safe_torch_load(p)["arch"].startswith("vit_conv")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: a MoCo v3 vit_conv_\* \(ConvStem\) encoder \(arch 'vit_conv_custom'\) is not supported.*patch_embed\.proj\.0\.weight"):
        load_teacher(p)


def test_bad_encoder_and_forced_format(files):
    moco, mae = files["mocov3"][0], files["mae"][0]
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(moco))}: encoder 'student' is not available in the mocov3 layout; choose one of \['base', 'momentum'\]"):
        load_teacher(moco, encoder="student")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(mae))}: does not have the ibot layout"):
        load_teacher(mae, format="ibot")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(mae))}: unknown format 'dino'"):
        load_teacher(mae, format="dino")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(moco))}: no ViT encoder under prefix '' of 'state_dict' for the ibot_teacher layout"):
        load_teacher(moco, format="ibot_teacher")


class _Evil:
    """Pickles to a call of os.system: loading it must be refused, never executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_code_running_pickle_refused(tmp_path):
    marker = tmp_path / "pwned"
    p = write_raw({"model": {"cls_token": torch.zeros(1)}, "payload": _Evil(marker)}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match=rf"{re.escape(str(p))}: refused.*weights_only"):
        load_teacher(p)
    assert not marker.exists()
