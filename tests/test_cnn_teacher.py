"""CNN teachers through the one loader (comad.checkpoint's 'cnn' rows, comad.teachers.load_teacher):
files in the released layouts (random weights here), detection, strict loading, freezing,
mean-fill masking, kept-position features on the stride-16 grid."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from comad.checkpoint import build_cnn, detect_format, get_layout, load_strict, read_encoder
from comad.checkpoint.cnn import IMAGENET_MEAN, IMAGENET_STD, cnn_net
from comad.io import CheckpointError
from comad.teachers import load_teacher
from comad.teachers.cnn import CNNTeacher, fill_dropped_patches
from comad.teachers.synthetic import CNN_FORMATS, random_cnn_state_dict, write_cnn_checkpoint

IMG = 64  # a 4x4 token grid
WIDTH = {"torchvision_mobilenet_v2": 96, "efficientnet_lite0": 112}
FIRST = {"torchvision_mobilenet_v2": "features.0", "efficientnet_lite0": "conv_stem"}  # the module the image enters


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnn")
    return {fmt: (d / f"{fmt}.pth", write_cnn_checkpoint(fmt, d / f"{fmt}.pth", seed=i)) for i, fmt in enumerate(CNN_FORMATS)}


@pytest.fixture(scope="module")
def teachers(files):
    return {fmt: load_teacher(path, img_size=IMG, precision="fp32") for fmt, (path, _) in files.items()}


def normalised(b: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, IMG, IMG, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fmt", CNN_FORMATS)
def test_released_layout_loads_strictly_and_is_detected(files, teachers, fmt):
    path, sd = files[fmt]
    t = teachers[fmt]
    assert detect_format(torch.load(path, weights_only=True)) == fmt == t.name
    assert isinstance(t, CNNTeacher) and read_encoder(path).family == "cnn"
    assert t.load_info["missing_keys"] == [] and t.load_info["unexpected_keys"] == []
    assert (t.embed_dim, t.patch_size, t.img_size, t.num_positions) == (WIDTH[fmt], 16, IMG, (IMG // 16) ** 2)
    net_sd = t.net.state_dict()
    renamed = read_encoder(path).state_dict  # the layout's convert: file names -> the network's
    assert renamed.keys() == net_sd.keys() and all(torch.equal(net_sd[k], v) for k, v in renamed.items())
    if fmt == "torchvision_mobilenet_v2":
        assert renamed.keys() == sd.keys()  # torchvision's names are the file's


def test_efficientnet_pytorch_names_land_on_timm_modules(files, teachers):
    """Hand-checked anchors of the flat-to-staged rename (stage depths 1, 2, 2, 3, 3, 4, 1)."""
    _, sd = files["efficientnet_lite0"]
    net = teachers["efficientnet_lite0"].net.state_dict()
    for file_key, timm_key in [("_conv_stem.weight", "conv_stem.weight"), ("_bn0.running_var", "bn1.running_var"),
                               ("_blocks.0._depthwise_conv.weight", "blocks.0.0.conv_dw.weight"),
                               ("_blocks.0._project_conv.weight", "blocks.0.0.conv_pw.weight"),
                               ("_blocks.0._bn2.bias", "blocks.0.0.bn2.bias"),
                               ("_blocks.1._expand_conv.weight", "blocks.1.0.conv_pw.weight"),
                               ("_blocks.2._bn0.running_mean", "blocks.1.1.bn1.running_mean"),
                               ("_blocks.8._project_conv.weight", "blocks.4.0.conv_pwl.weight"),
                               ("_blocks.15._bn2.weight", "blocks.6.0.bn3.weight"),
                               ("_bn1.running_mean", "bn2.running_mean"), ("_fc.weight", "classifier.weight")]:
        assert torch.equal(sd[file_key], net[timm_key]), (file_key, timm_key)


def test_missing_and_extra_keys_are_refused_with_their_names(files, tmp_path):
    _, sd = files["torchvision_mobilenet_v2"]
    short = {k: v for k, v in sd.items() if k != "features.5.conv.1.1.running_var"}
    torch.save(short, tmp_path / "short.pth")
    with pytest.raises(CheckpointError, match=r"short\.pth: not an exact MobileNetV2; missing keys "
                                              r"\['features\.5\.conv\.1\.1\.running_var'\], unexpected keys \[\]"):
        load_teacher(tmp_path / "short.pth", img_size=IMG)
    torch.save({**sd, "features.19.weight": torch.zeros(3)}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \[\], unexpected keys \['features\.19\.weight'\]"):
        load_teacher(tmp_path / "extra.pth", img_size=IMG)
    _, lite = files["efficientnet_lite0"]
    torch.save({k: v for k, v in lite.items() if k != "_blocks.2._bn0.running_mean"}, tmp_path / "lite.pth")
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\.1\.bn1\.running_mean'\]"):
        load_teacher(tmp_path / "lite.pth", img_size=IMG)
    torch.save({**lite, "_blocks.3._se_reduce.weight": torch.zeros(1)}, tmp_path / "se.pth")
    with pytest.raises(CheckpointError, match=r"no EfficientNet-PyTorch -> timm rule covers: \['_blocks\.3\._se_reduce\.weight'\]"):
        load_teacher(tmp_path / "se.pth", img_size=IMG)
    torch.save({**lite, "_blocks.16._bn0.weight": torch.zeros(1)}, tmp_path / "deeper.pth")
    with pytest.raises(CheckpointError, match=r"the file has 17 blocks, 16 fit"):
        load_teacher(tmp_path / "deeper.pth", img_size=IMG)
    torch.save({"layer1.conv1.weight": torch.zeros(1)}, tmp_path / "resnet.pth")
    with pytest.raises(CheckpointError, match=r"resnet\.pth: unknown layout.*'layer1\.conv1\.weight'.*Known layouts:.*"
                                              r"torchvision_mobilenet_v2: .*efficientnet_lite0: "):
        load_teacher(tmp_path / "resnet.pth", img_size=IMG)


@pytest.mark.parametrize("fmt", CNN_FORMATS)
def test_frozen_and_always_in_eval_mode(teachers, fmt):
    t = teachers[fmt]
    t.train()
    assert t.training and not t.net.training and not any(m.training for m in t.net.modules())
    assert not any(p.requires_grad for p in t.parameters())
    x = normalised().requires_grad_(True)
    out = t(x, torch.tensor([[0, 5], [3, 15]]))
    assert not out.requires_grad and out.grad_fn is None
    stats = [b.clone() for n, b in t.net.named_buffers() if n.endswith("running_mean")]
    t(normalised(seed=1))
    assert all(torch.equal(a, b) for a, b in zip(stats, [b for n, b in t.net.named_buffers() if n.endswith("running_mean")]))


def test_fill_dropped_patches_sets_exactly_the_dropped_patches():
    x = torch.randn(2, 3, 32, 48)  # a 2x3 grid of 16-pixel patches
    keep = torch.tensor([[0, 4], [5, 1]])
    out = fill_dropped_patches(x, keep, 16, value=-7.0)
    for b in range(2):
        for p in range(6):
            r, c = divmod(p, 3)
            patch = (slice(None), slice(16 * r, 16 * r + 16), slice(16 * c, 16 * c + 16))
            if p in keep[b].tolist():
                assert torch.equal(out[b][patch], x[b][patch])
            else:
                assert (out[b][patch] == -7.0).all()


@pytest.mark.parametrize("fmt", CNN_FORMATS)
def test_masked_forward_fills_with_the_mean_and_reads_the_kept_positions(teachers, fmt):
    """The network sees the images in its own normalisation with the dropped patches at 0 (its
    mean), and the output equals its own forward's stride-16 map read at the kept positions."""
    t, lay = teachers[fmt], cnn_net(get_layout(fmt))
    x, keep = normalised(), torch.tensor([[0, 5, 10], [15, 3, 6]])
    seen, tapped = {}, {}
    h1 = t.net.get_submodule(FIRST[fmt]).register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0].clone()))
    h2 = t.net.get_submodule(lay.taps[-1]).register_forward_hook(lambda m, a, o: tapped.setdefault("y", o.clone()))
    try:
        out = t(x, keep)  # the teacher's run
        to_weights = (x * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) + torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
                      - torch.tensor(lay.mean).view(1, 3, 1, 1)) / torch.tensor(lay.std).view(1, 3, 1, 1)
        expect_in = fill_dropped_patches(to_weights, keep, 16, 0.0)
        assert torch.allclose(seen["x"], expect_in, rtol=1e-5, atol=1e-5)
        seen.clear(), tapped.clear()
        with torch.no_grad():
            t.net(expect_in)  # the network's own full forward (classifier and all)
    finally:
        h1.remove(), h2.remove()
    ref = tapped["y"].flatten(2).transpose(1, 2)  # (B, N, C), row-major patches
    assert out.shape == (2, 3, WIDTH[fmt])
    assert torch.allclose(out, torch.stack([ref[b, keep[b]] for b in range(2)]), atol=1e-5)
    full = t(x)
    assert full.shape == (2, t.num_positions, WIDTH[fmt])
    assert not torch.allclose(full[0, keep[0]], out[0], atol=1e-3)  # receptive fields reach past the mask


@pytest.mark.parametrize("fmt", CNN_FORMATS)
def test_layers_index_the_stride16_taps(teachers, fmt):
    t, x = teachers[fmt], normalised()
    last, first = t(x, layers=-1), t(x, layers=0)
    both = t(x, layers=(0, -1))
    assert isinstance(both, list) and torch.equal(both[0], first) and torch.equal(both[1], last)
    assert torch.equal(t(x, layers=(len(t.taps) - 1,)), last) and not torch.allclose(first, last)
    with pytest.raises(ValueError, match=r"layer indices \[3\] are out of range for its 3 taps"):
        t(x, layers=3)
    with pytest.raises(ValueError, match="has no class token"):
        t(x, return_cls=True)
    with pytest.raises(ValueError, match=r"images are \(32, 32\), the teacher takes 64x64"):
        t(torch.zeros(1, 3, 32, 32))
    with pytest.raises(ValueError, match="keep_idx must be int64"):
        t(x, torch.zeros(2, 3, dtype=torch.int32))


def test_the_stride16_grid_is_checked(files):
    path, sd = files["torchvision_mobilenet_v2"]
    lay = cnn_net(get_layout("torchvision_mobilenet_v2"))
    net = build_cnn(lay)
    load_strict(net, sd, what="MobileNetV2")
    name = "torchvision_mobilenet_v2"
    with pytest.raises(ValueError, match="img_size 72 is not a multiple of 16"):
        CNNTeacher(net, lay, name, str(path), img_size=72)
    stride32 = dataclasses.replace(lay, taps=("features.13", "features.14"))
    with pytest.raises(ValueError, match=r"give maps \[\(96, 4, 4\), \(160, 2, 2\)\] at 64px; expected one width at the "
                                         r"stride-16 grid \(4, 4\)"):
        CNNTeacher(net, stride32, name, str(path), img_size=IMG)
    with pytest.raises(ValueError, match=r"input_mean and input_std need 3 values each \(std > 0\), got \(0\.5,\), \(0\.5,\)"):
        CNNTeacher(net, lay, name, str(path), img_size=IMG, input_mean=(0.5,), input_std=(0.5,))
    t = CNNTeacher(net, lay, name, str(path), img_size=128)
    assert t.num_positions == 64 and t(torch.zeros(1, 3, 128, 128)).shape == (1, 64, 96)


def test_bf16_precision_runs_and_returns_float32(files):
    t = load_teacher(files["efficientnet_lite0"][0], img_size=IMG, precision="bf16")
    out = t(normalised(), torch.tensor([[1, 2], [3, 4]]))
    assert out.dtype == torch.float32 and out.shape == (2, 2, 112)
    ref = load_teacher(files["efficientnet_lite0"][0], img_size=IMG, precision="fp32")(normalised(), torch.tensor([[1, 2], [3, 4]]))
    assert torch.allclose(out, ref, rtol=0.1, atol=0.1 * ref.abs().max().item())


@pytest.mark.parametrize("name,fmt", [("mobilenet_v2", "torchvision_mobilenet_v2"), ("efficientnet_lite0", "efficientnet_lite0")])
def test_released_weights_match_the_synthetic_layout_and_classify_photos(name, fmt):
    """With the weights packages installed (experiments/evidence_setup.sh): the same keys and shapes as the
    synthetic files, and the whole network names skimage's cat and coffee photos."""
    from comad.teachers.packaged import packaged_weights

    try:
        path = packaged_weights(name)
    except FileNotFoundError as e:
        pytest.skip(str(e))
    data = pytest.importorskip("skimage.data")
    real, synthetic = torch.load(path, weights_only=True), random_cnn_state_dict(fmt)
    assert list(real) == list(synthetic) and all(real[k].shape == synthetic[k].shape for k in real)
    t = load_teacher(path, img_size=224, precision="fp32")
    lay = t.cnn
    x = torch.cat([torch.nn.functional.interpolate(torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255,
                                                   size=(224, 224), mode="bilinear", antialias=True, align_corners=False)
                   for a in (data.chelsea(), data.coffee())])
    x = (x - torch.tensor(lay.mean).view(1, 3, 1, 1)) / torch.tensor(lay.std).view(1, 3, 1, 1)
    with torch.no_grad():
        top = t.net(x).argmax(-1).tolist()
    assert 281 <= top[0] <= 285 and top[1] in (967, 968), top  # ImageNet cats 281-285; espresso 967, cup 968


def test_the_shared_loader_takes_a_grid_refuses_vit_options_and_keeps_cnns_out_of_vit_entry_points(files):
    path, _ = files["efficientnet_lite0"]
    t = load_teacher(path, grid=3, precision="fp32", input_mean=(0.5, 0.5, 0.5), input_std=(0.5, 0.5, 0.5))
    assert (t.img_size, t.num_positions) == (48, 9) and not t.renormalise  # the images are already in [-1, 1]
    assert load_teacher(path, grid=3, precision="fp32").renormalise  # ImageNet-normalised images are mapped
    assert read_encoder(path).arch_source == "layout efficientnet_lite0"
    with pytest.raises(ValueError, match=r"arch, num_heads describe a ViT; this file is a CNN \(efficientnet_lite0\)"):
        load_teacher(path, arch="vit_base", num_heads=12)
    with pytest.raises(CheckpointError, match="patch size is not 14: a efficientnet_lite0 CNN teacher is read at stride 16"):
        load_teacher(path, patch_size=14)
    with pytest.raises(ValueError, match="img_size 64 is not grid 3 x its patch size 16"):
        load_teacher(path, grid=3, img_size=64)
    from comad.checkpoint import load_vit, read_arch

    for call in (load_vit, read_arch):
        with pytest.raises(CheckpointError, match=r"efficientnet_lite0\.pth: a CNN \(efficientnet_lite0\), not a ViT"):
            call(path)


@pytest.mark.parametrize("fmt", CNN_FORMATS)
def test_library_init_files_are_the_networks_own_init_in_the_released_layout(files, tmp_path, fmt):
    """The random-weight control teachers: the network as torchvision / timm initialise it, seeded."""
    path = tmp_path / f"{fmt}.pth"
    sd = write_cnn_checkpoint(fmt, path, seed=3, init="library")
    assert list(sd) == list(files[fmt][1])  # the released key order
    assert all(torch.equal(a, b) for a, b in zip(sd.values(), random_cnn_state_dict(fmt, 3, "library").values()))
    assert not torch.equal(next(iter(sd.values())), next(iter(random_cnn_state_dict(fmt, 4, "library").values())))
    bn = [k for k in sd if k.endswith("running_var")]
    assert all(torch.equal(sd[k], torch.ones_like(sd[k])) for k in bn)  # fresh BatchNorm statistics
    t = load_teacher(path, grid=4, precision="fp32")
    assert t(normalised()).shape == (2, 16, WIDTH[fmt])
