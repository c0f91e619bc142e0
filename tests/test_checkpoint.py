"""comad.checkpoint: one loader for every ViT file, used by every entry point.

Every student form (ours as safetensors and .pth, a plain timm state dict, a DeiT-style
``{'model': ...}`` with a classifier, a DDP ``module.`` state dict, a random-init export) is read
the same way by the teachers, the ImageNet probes, the dense backbone and the tools; the
architecture comes from metadata or shapes with the head count's source recorded; the one
position-embedding resampler is timm's; and a wrong file gets the same message everywhere.
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

from comad.checkpoint import load_vit, read_arch, read_encoder, resample_pos_embed, resolve_num_heads
from comad.checkpoint import load_vit as load_student
from comad.checkpoint import read_encoder as read_student
from comad.export import export_student
from comad.io import CheckpointError
from comad.teachers import load_teacher
from transfer import ComadMAEViT
from comad.checkpoint import read_arch as read_student_arch

ROOT = Path(__file__).resolve().parents[1]
DIM, DEPTH, IMG, PATCH = 64, 2, 64, 16  # heads 1 = DIM // 64: what a file without metadata gets
ARCH = dict(img_size=IMG, patch_size=PATCH, in_chans=3, embed_dim=DIM, depth=DEPTH, num_heads=1, mlp_ratio=4.0,
            qkv_bias=True, init_values=None, num_positions=(IMG // PATCH) ** 2)
SHAPES = "shapes (num_heads = embed_dim // 64)"


def _dense(**kw):
    """The dense backbone with its student loaded (its init_weights, as mmengine's Runner calls it)."""
    bb = ComadMAEViT(**kw)
    bb.init_weights()
    return bb


def _vit(dim: int = DIM, heads: int = 1, num_classes: int = 0, seed: int = 0, depth: int = DEPTH) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(img_size=IMG, patch_size=PATCH, embed_dim=dim, depth=depth, num_heads=heads,
                             num_classes=num_classes).eval()


def _convert_tool():
    spec = importlib.util.spec_from_file_location("convert_teacher", ROOT / "tools" / "convert_teacher.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# kind -> (format the layout table reports, arch source, dropped keys)
KINDS = {
    "ours.safetensors": ("comad_student", "metadata", []),
    "ours.pth": ("comad_student_pth", "metadata", []),
    "timm": ("timm", SHAPES, []),
    "timm_with_head": ("timm", SHAPES, ["head.bias", "head.weight"]),
    "deit": ("mae", SHAPES, ["head.bias", "head.weight"]),
    "ddp": ("timm", SHAPES, ["head.bias", "head.weight"]),
    "state_dict": ("ibot_teacher", SHAPES, []),
}


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> tuple[VisionTransformer, dict[str, Path]]:
    """One classifier ViT and its encoder written in every student form."""
    root = tmp_path_factory.mktemp("students")
    vit = _vit(num_classes=10)
    full = vit.state_dict()
    enc = {k: v for k, v in full.items() if not k.startswith("head.")}
    st = export_student(vit, root / "ours", img_size=None)
    files = {"ours.safetensors": st, "ours.pth": st.with_name("student.pth")}
    for kind, obj in (("timm", enc), ("timm_with_head", full), ("deit", {"model": full}),
                      ("ddp", {"module." + k: v for k, v in full.items()}), ("state_dict", {"state_dict": enc})):
        files[kind] = root / f"{kind}.pth"
        torch.save(obj, files[kind])
    return vit, files


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_student_form_is_read_alike(students, kind):
    vit, files = students
    fmt, source, dropped = KINDS[kind]
    ckpt = read_encoder(files[kind])
    assert (ckpt.format, ckpt.arch_source, ckpt.report["dropped_keys"]) == (fmt, source, dropped)
    assert ckpt.report["dropped_classifier_keys"] == dropped and ckpt.family == "vit"
    assert ckpt.arch == ARCH and ckpt.source == files[kind]
    want = {k: v for k, v in vit.state_dict().items() if not k.startswith("head.")}
    assert ckpt.state_dict.keys() == want.keys() and all(torch.equal(ckpt.state_dict[k], v) for k, v in want.items())
    if kind.startswith("ours"):
        assert ckpt.meta["arch"] == {k: ARCH[k] for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads")}


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_entry_point_takes_every_student_form(students, kind, tmp_path):
    """Teacher, ImageNet loader, dense backbone, transfer arch reader and convert tool: the same
    weights from every form, and the same encoder output as the original timm model."""
    vit, files = students
    path = files[kind]
    x = torch.randn(2, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = vit.forward_features(x)
        student = load_student(path).model.eval().forward_features(x)
        teacher = load_teacher(path, precision="fp32")(x)
        dense = _dense(student=path, img_size=IMG, out_indices=(-1,)).eval()(x)[0]
    torch.testing.assert_close(student, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(teacher, ref[:, 1:], rtol=0, atol=1e-5)
    torch.testing.assert_close(dense.flatten(2).transpose(1, 2), ref[:, 1:], rtol=0, atol=1e-5)
    assert read_student_arch(path) == dict(img_size=IMG, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=1)
    meta = _convert_tool().convert(path, tmp_path / "t.safetensors")
    assert meta["format"] == KINDS[kind][0] and meta["missing_keys"] == [] == meta["unexpected_keys"]
    assert load_file(str(tmp_path / "t.safetensors")).keys() == read_encoder(path).state_dict.keys()


def test_random_init_export_is_a_student_like_any(tmp_path):
    from transfer.imagenet.baselines import BASELINE_DIR, export_random_student

    path = export_random_student(BASELINE_DIR / "random-init_vit-tiny.py", tmp_path / "student", seed=0)
    ckpt = load_student(path)
    assert ckpt.format == "comad_student" and ckpt.arch_source == "metadata"
    assert read_student_arch(path) == dict(img_size=224, patch_size=16, embed_dim=192, depth=12, num_heads=3)
    assert ckpt.report["missing_keys"] == [] and ckpt.report["unexpected_keys"] == []
    assert _dense(student=path.with_name("student.pth"), img_size=64).load_report["missing_keys"] == []


# --------------------------------------------------------------------------- architecture and heads


def test_arch_from_metadata_and_from_shapes_agree_and_heads_record_their_source(tmp_path):
    vit = _vit(dim=128, heads=4)  # 4 heads, where 128 // 64 would say 2
    st = export_student(vit, tmp_path / "ours", img_size=None)
    torch.save(vit.state_dict(), tmp_path / "bare.pth")
    ours, bare = read_encoder(st), read_encoder(tmp_path / "bare.pth")
    assert ours.arch_source == "metadata" and ours.arch["num_heads"] == 4
    assert bare.arch_source == SHAPES and bare.arch["num_heads"] == 2
    assert {k: v for k, v in ours.arch.items() if k != "num_heads"} == {k: v for k, v in bare.arch.items() if k != "num_heads"}
    given = read_encoder(tmp_path / "bare.pth", num_heads=4)
    assert given.arch["num_heads"] == 4 and given.arch_source == "shapes (num_heads given)"
    x = torch.randn(1, 3, IMG, IMG)
    torch.testing.assert_close(load_vit(given).model.eval().forward_features(x), vit.forward_features(x))
    assert read_encoder(st, num_heads=4).arch["num_heads"] == 4  # agreeing with the metadata is fine
    with pytest.raises(CheckpointError, match=r"num_heads=2 was given, but its metadata 'arch' says num_heads=4"):
        read_encoder(st, num_heads=2)
    with pytest.raises(CheckpointError, match=r"num_heads 3 \(given\) does not divide embed_dim 128"):
        read_encoder(tmp_path / "bare.pth", num_heads=3)


def test_heads_from_a_timm_name_in_the_file_or_given():
    assert resolve_num_heads(1280, timm_name="vit_huge_patch14_224") == (16, "from the timm model 'vit_huge_patch14_224'")
    assert resolve_num_heads(1280) == (20, "= embed_dim // 64")
    assert resolve_num_heads(96) == (None, "unknown (embed_dim 96 is not a multiple of 64)")
    assert resolve_num_heads(96, timm_name="not_a_timm_model")[0] is None
    assert resolve_num_heads(1280, given=8, timm_name="vit_huge_patch14_224") == (8, "given")


def test_a_timm_train_checkpoint_names_its_model(tmp_path):
    """timm's train.py saves {'arch': model name, 'state_dict': ...}: the heads come from that name."""
    sd = VisionTransformer(img_size=32, patch_size=16, embed_dim=192, depth=1, num_heads=3, num_classes=5).state_dict()
    torch.save({"epoch": 3, "arch": "vit_tiny_patch16_224", "state_dict": sd}, tmp_path / "train.pth.tar")
    ckpt = read_encoder(tmp_path / "train.pth.tar")
    assert ckpt.arch_source == "shapes (num_heads from the timm model 'vit_tiny_patch16_224')" and ckpt.arch["num_heads"] == 3
    assert ckpt.meta == {"epoch": 3, "arch": "vit_tiny_patch16_224"} and ckpt.report["dropped_keys"] == ["head.bias", "head.weight"]
    torch.save({"arch": "vit_small_patch16_224", "state_dict": sd}, tmp_path / "wrong.pth.tar")
    with pytest.raises(CheckpointError, match=r"wrong.pth.tar: the timm model 'vit_small_patch16_224' is 384 wide, the file's tensors 192"):
        read_encoder(tmp_path / "wrong.pth.tar")


def test_unknown_heads_are_asked_for_where_a_model_is_built(tmp_path):
    torch.save(_vit(dim=96, heads=3).state_dict(), tmp_path / "w96.pth")
    ckpt = read_encoder(tmp_path / "w96.pth")  # reading needs no head count
    assert ckpt.arch["num_heads"] is None and "unknown" in ckpt.arch_source
    for build in (load_vit, read_arch, lambda p: _dense(student=p, img_size=IMG, out_indices=(-1,))):
        with pytest.raises(CheckpointError, match=r"w96.pth: cannot infer num_heads for embed_dim 96.*give num_heads"):
            build(tmp_path / "w96.pth")
    assert _dense(student=tmp_path / "w96.pth", img_size=IMG, num_heads=3, out_indices=(-1,)).num_heads == 3


def test_metadata_that_contradicts_the_tensors_is_refused(tmp_path):
    st = export_student(_vit(), tmp_path / "ours", img_size=None)
    with safe_open(str(st), "pt") as f:
        header = f.metadata()
    lying = dict(json.loads(header["arch"]), depth=3)
    save_file(load_file(str(st)), str(tmp_path / "lying.safetensors"), metadata=dict(header, arch=json.dumps(lying)))
    with pytest.raises(CheckpointError, match=r"lying.safetensors: its metadata 'arch' states depth=3 but the tensors hold depth=2"):
        read_encoder(tmp_path / "lying.safetensors")


# --------------------------------------------------------------------------- position embeddings


def test_resample_pos_embed_is_timms():
    pos = torch.randn(1, 1 + 16, 8, generator=torch.Generator().manual_seed(0))
    for new in ((6, 8), (2, 2), (4, 4)):
        ref = resample_abs_pos_embed(pos, new_size=list(new), old_size=[4, 4], num_prefix_tokens=1,
                                     interpolation="bicubic", antialias=True)
        torch.testing.assert_close(resample_pos_embed(pos, new, 4), ref, rtol=0, atol=0)
    out = resample_pos_embed(pos, (6, 8))  # old grid from the token count
    assert out.shape == (1, 1 + 48, 8) and torch.equal(out[:, :1], pos[:, :1])
    # what timm itself does when a checkpoint is loaded into a model of another input size
    model = VisionTransformer(img_size=(96, 128), patch_size=16, embed_dim=8, depth=1, num_heads=1, num_classes=0)
    filtered = checkpoint_filter_fn({"pos_embed": pos}, model)["pos_embed"]
    torch.testing.assert_close(out, filtered, rtol=0, atol=0)
    assert resample_pos_embed(pos.bfloat16(), 2).dtype == torch.bfloat16
    assert resample_pos_embed(torch.randn(1, 16, 8), 2, 4, num_prefix_tokens=0).shape == (1, 4, 8)
    with pytest.raises(ValueError, match=r"pos_embed of shape \(1, 17, 8\) is not 1 prefix token\(s\) plus a 5x5 grid"):
        resample_pos_embed(pos, 2, 5)


def test_the_dinov2_layout_resamples_without_antialiasing_and_says_so(tmp_path):
    """DINOv2 was trained with a plain bicubic resample; its layout row (header format=dinov2)
    chooses that, other rows timm's antialiased one, and the load report records which."""
    from comad.teachers.synthetic import write_dinov2_checkpoint

    pos = torch.randn(1, 1 + 64, 8, generator=torch.Generator().manual_seed(1))
    plain = resample_abs_pos_embed(pos, new_size=[3, 3], old_size=[8, 8], num_prefix_tokens=1,
                                   interpolation="bicubic", antialias=False)
    torch.testing.assert_close(resample_pos_embed(pos, 3, 8, antialias=False), plain, rtol=0, atol=0)
    assert (resample_pos_embed(pos, 3, 8) - plain).abs().max() > 1e-2  # shrinking: antialiasing matters
    path = tmp_path / "dinov2.safetensors"
    sd = write_dinov2_checkpoint(path, embed_dim=64, depth=2, num_heads=1, patch_size=14, img_size=14 * 8, init="scaled")
    ckpt = load_vit(path, img_size=14 * 3)
    assert ckpt.format == "dinov2" and ckpt.report["pos_antialias"] is False
    assert ckpt.report["pos_embed"] == "resampled 8x8 -> 3x3 (bicubic, no antialias)"
    want = resample_pos_embed(sd["pos_embed"], 3, 8, antialias=False)
    torch.testing.assert_close(ckpt.model.pos_embed.detach(), want, rtol=0, atol=0)
    teacher = load_teacher(path, patch_size=None, grid=3)
    assert teacher.img_size == 42 and teacher.load_info["pos_antialias"] is False
    torch.testing.assert_close(teacher.vit.pos_embed, want, rtol=0, atol=0)
    save_file(sd, str(tmp_path / "plain.safetensors"))  # the same tensors without the header: the timm row
    other = load_vit(tmp_path / "plain.safetensors", img_size=14 * 3)
    assert other.format == "timm" and other.report["pos_antialias"] is True
    assert other.report["pos_embed"] == "resampled 8x8 -> 3x3 (bicubic, antialias)"


def test_every_caller_resamples_the_same_way(tmp_path):
    vit = _vit()
    st = export_student(vit, tmp_path / "ours", img_size=None)
    want = resample_pos_embed(vit.pos_embed.detach(), 6, 4)
    got = {
        "teacher": load_teacher(st, img_size=96).vit.pos_embed,
        "imagenet": load_student(st, img_size=96).model.pos_embed,
        "dense": _dense(student=st, img_size=96, out_indices=(-1,)).pos_embed,
        "export": load_file(str(export_student(vit, tmp_path / "e96", img_size=96)))["pos_embed"],
    }
    for name, pos in got.items():
        torch.testing.assert_close(pos.detach(), want, rtol=0, atol=0, msg=name)


# --------------------------------------------------------------------------- wrong files


def _wrong_files(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a part of the message every entry point gives)."""
    root.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"module.layer1.0.conv1.weight": torch.zeros(2, 2)}}, root / "resnet50.pth")
    (root / "notes.pth").write_text("not weights\n")
    good = export_student(_vit(), root / "good", img_size=None)
    save_file(load_file(str(good)), str(root / "student.safetensors"), metadata={"format": "comad-student"})
    sd = _vit().state_dict()
    sd["dist_token"] = torch.zeros(1, 1, DIM)
    sd["pos_embed"] = torch.cat([sd["pos_embed"], sd["pos_embed"][:, :1]], 1)
    torch.save({"model": sd}, root / "deit_distilled.pth")
    return {
        "resnet": (root / "resnet50.pth", "unknown layout, no ViT encoder found (not a timm VisionTransformer state dict"),
        "text": (root / "notes.pth", "not a torch checkpoint; it starts with b'not weights"),
        "no arch": (root / "student.safetensors", "its metadata has no complete 'arch' (expected keys img_size, patch_size"),
        "distilled": (root / "deit_distilled.pth", "pos_embed has 18 tokens, which is not 1 class token plus a square "
                                                   "grid of patches (it has a 'dist_token': a distilled DeiT"),
    }


def _message(call, path: Path) -> str:
    with pytest.raises(CheckpointError) as e:
        call(path)
    return str(e.value)


def test_a_wrong_file_gets_the_same_error_from_every_entry_point(tmp_path):
    from transfer.run import main

    data = tmp_path / "data" / "imagenet"
    for split in ("train", "val"):
        (data / split / "n01440764").mkdir(parents=True)
        (data / split / "n01440764" / "a.JPEG").write_bytes(b"")  # never read: the student fails first
    tool = _convert_tool()
    entry_points = {
        "load_teacher": lambda p: load_teacher(p, img_size=IMG),
        "load_vit": load_student,
        "read_encoder": read_student,
        "read_arch": read_student_arch,
        "ComadMAEViT": lambda p: _dense(student=p, img_size=IMG, out_indices=(-1,)),
        "convert_teacher": lambda p: tool.convert(p, tmp_path / "out.safetensors"),
        "imagenet-knn": lambda p: main(["--student", str(p), "--data-root", str(tmp_path / "data"), "--work-dir",
                                        str(tmp_path / "w"), "imagenet-knn"]),
    }
    for name, (path, part) in _wrong_files(tmp_path / "wrong").items():
        messages = {entry: _message(call, path) for entry, call in entry_points.items()}
        first = messages["load_teacher"]
        assert str(path) in first and part in first, (name, first)
        assert all(m == first for m in messages.values()), (name, messages)
    assert not (tmp_path / "out.safetensors").exists()
