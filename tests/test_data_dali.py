"""The DALI data path (``data.backend='dali'``) in DALI's CPU mode: the same crops (in
distribution), interpolation, files, order, labels, corrupt-file handling and resume as the torch path.

Skipped with the reason when NVIDIA DALI is not installed (the ``dali`` extra).
"""
from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed (pip install -e '.[dali]')")

from comad.data import (  # noqa: E402
    CorruptImageError,
    ImageFolderDataset,
    TooManyCorruptImagesError,
    build_train_transform,
    load_demo_photo,
    write_corrupt_jpeg,
)
from comad.data.dali import CropSpec  # noqa: E402
from comad.data.dali_loader import DaliTrainLoader, skip_known_corrupt  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _take(loader, n: int) -> list[dict]:
    return list(itertools.islice(iter(loader), n))


# ------------------------------------------------------------------------------- the spec
def test_crop_spec_reads_the_torch_train_transform():
    spec = CropSpec.from_transform(build_train_transform(48, scale=(0.3, 0.9), ratio=(0.5, 2.0), hflip=0.25,
                                                         normalize=False))
    assert spec == CropSpec(size=(48, 48), scale=(0.3, 0.9), ratio=(0.5, 2.0), hflip=0.25,
                            interpolation="INTERP_CUBIC", antialias=True)
    assert CropSpec.from_transform(build_train_transform(32, hflip=0.0, normalize=False)).hflip == 0.0
    with pytest.raises(ValueError, match="normalize=False"):
        CropSpec.from_transform(build_train_transform(32, normalize=True))
    from comad.data import build_eval_transform

    with pytest.raises(ValueError, match="RandomResizedCrop"):
        CropSpec.from_transform(build_eval_transform(32, normalize=False))


# --------------------------------------------------------------------------- interpolation
def test_dali_resize_matches_the_torch_bicubic_antialias(tmp_path):
    """A whole-image crop (scale 1, the image's own ratio) through both paths: the DALI graph's
    resize is the torch transform's bicubic + antialias (the control, bilinear, is far off)."""
    img = Image.fromarray(load_demo_photo("astronaut")).resize((200, 150), Image.Resampling.BICUBIC)
    (tmp_path / "train" / "a").mkdir(parents=True)
    img.save(tmp_path / "train" / "a" / "0.png")
    ds = ImageFolderDataset(tmp_path)
    kw = dict(scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), hflip=0.0, normalize=False)
    tf = build_train_transform(56, **kw)
    got = _take(DaliTrainLoader(ds, [0] * 2, 2, CropSpec.from_transform(tf), num_threads=1), 1)[0]["inputs"][0]
    want = tf(img)
    bilinear = TF.resize(TF.pil_to_tensor(img), [56, 56], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)
    diff = (got.float() - want.float()).abs().mean().item()
    assert got.shape == want.shape == (3, 56, 56) and got.dtype == torch.uint8
    assert diff < 0.5, f"mean |DALI - torch bicubic| = {diff:.3f} grey levels"
    assert (bilinear.float() - want.float()).abs().mean().item() > 2 * diff + 0.5  # the control differs


# ------------------------------------------------------------------------ crop statistics
def _ramp(w: int, h: int) -> Image.Image:
    """R = column, G = row (exact, so at most 256 x 256): a crop's window can be read from its pixels."""
    assert w <= 256 and h <= 256
    x = np.arange(w)[None, :].repeat(h, 0)
    y = np.arange(h)[:, None].repeat(w, 1)
    return Image.fromarray(np.stack([x, y, np.zeros_like(x)], -1).astype(np.uint8))


def _window(out: torch.Tensor) -> tuple[float, float, float, float, bool]:
    """(x0, y0, crop width, crop height, flipped) of a resized crop of a :func:`_ramp`, from a
    straight-line fit of its ramps away from the borders (the resampling reproduces a line)."""
    s = out.shape[-1]
    m = s // 8
    u = np.arange(m, s - m) + 0.5  # pixel centres, 0..s
    out = out.float().numpy()
    fx = np.polyfit(u, out[0, m:-m, m:-m].mean(0), 1)
    fy = np.polyfit(u, out[1, m:-m, m:-m].mean(1), 1)
    flipped = fx[0] < 0
    # the centre u maps to x0 - 0.5 + u * cw / s (flipped: u -> s - u)
    cw, ch = abs(fx[0]) * s, fy[0] * s
    x0 = fx[1] + (fx[0] * s if flipped else 0) + 0.5
    return x0, fy[1] + 0.5, cw, ch, bool(flipped)


def _stats(windows: list[tuple], sizes: list[tuple[int, int]]) -> dict[str, np.ndarray]:
    a = np.asarray([w[:4] for w in windows])
    wh = np.asarray(sizes, dtype=float)
    return dict(scale=a[:, 2] * a[:, 3] / (wh[:, 0] * wh[:, 1]), log_ratio=np.log(a[:, 2] / a[:, 3]),
                cx=(a[:, 0] + a[:, 2] / 2) / wh[:, 0], flip=np.asarray([w[4] for w in windows], dtype=float))


def test_window_estimate_reads_known_crops():
    """The measurement itself: known windows, cut and resized as the torch transform does, are
    read back within a pixel."""
    img = TF.pil_to_tensor(_ramp(256, 192))
    for top, left, ch, cw, flip in [(0, 0, 192, 256, False), (37, 81, 120, 150, True), (100, 5, 90, 70, False)]:
        out = TF.resized_crop(img, top, left, ch, cw, [64, 64], interpolation=TF.InterpolationMode.BICUBIC,
                              antialias=True)
        out = TF.horizontal_flip(out) if flip else out
        x0, y0, ew, eh, f = _window(out)
        assert f == flip and abs(ew - cw) < 1 and abs(eh - ch) < 1 and abs(x0 - left) < 1 and abs(y0 - top) < 1, \
            (x0, y0, ew, eh, f)


def test_crop_scale_ratio_and_flip_statistics_match_the_torch_transform(tmp_path):
    """300 crops of each path, read from their pixels: mean crop area fraction within 0.05, mean
    log aspect ratio within 0.04, crop centre within 0.04 of the image width, the quartiles of
    the area fraction within 0.07, flip rate in 0.4-0.6. About 3 standard errors each (seeded,
    so deterministic). A transform with scale (0.5, 1) instead of (0.2, 1) fails the area test."""
    sizes = [(256, 192), (192, 256)]
    for k, (w, h) in enumerate(sizes):
        (tmp_path / "train" / f"c{k}").mkdir(parents=True)
        _ramp(w, h).save(tmp_path / "train" / f"c{k}" / "0.png")
    ds = ImageFolderDataset(tmp_path)
    n, s = 300, 64
    order = np.random.default_rng(0).integers(0, 2, n)
    tf = build_train_transform(s, normalize=False)
    loader = DaliTrainLoader(ds, order.tolist(), 50, CropSpec.from_transform(tf), num_threads=2, seed=3)
    dali_out = [(b["inputs"][i], int(b["index"][i])) for b in loader for i in range(len(b["index"]))]
    assert [i for _, i in dali_out] == order.tolist()
    imgs = [Image.open(ds.path(i)).convert("RGB") for i in range(2)]

    def torch_windows(transform) -> list[tuple]:
        torch.manual_seed(1)
        return [_window(transform(imgs[i])) for i in order]

    d = _stats([_window(x) for x, _ in dali_out], [sizes[i] for i in order])
    t = _stats(torch_windows(tf), [sizes[i] for i in order])
    assert abs(d["scale"].mean() - t["scale"].mean()) < 0.05, (d["scale"].mean(), t["scale"].mean())
    for q in (0.25, 0.5, 0.75):
        assert abs(np.quantile(d["scale"], q) - np.quantile(t["scale"], q)) < 0.07, q
    assert abs(d["log_ratio"].mean() - t["log_ratio"].mean()) < 0.04
    assert abs(d["log_ratio"].std() - t["log_ratio"].std()) < 0.04
    assert np.abs(d["log_ratio"]).max() < np.log(4 / 3) + 0.03  # within the ratio range (+ rounding)
    assert abs(d["cx"].mean() - t["cx"].mean()) < 0.04
    assert 0.4 < d["flip"].mean() < 0.6 and 0.4 < t["flip"].mean() < 0.6
    assert d["scale"].min() > 0.2 - 0.03 and d["scale"].max() < 1.03
    # the control: another scale range is detected by the same comparison
    other = _stats(torch_windows(build_train_transform(s, scale=(0.5, 1.0), normalize=False)), [sizes[i] for i in order])
    assert abs(d["scale"].mean() - other["scale"].mean()) > 0.1


# ------------------------------------------------------------------- files, order, corrupt
def _solid_folder(root: Path, n_per_class: int = 6, classes: int = 3) -> None:
    """Images of one grey level each, 20 * (their index + 1): a crop's centre names its file."""
    k = 0
    for c in range(classes):
        (root / "train" / f"c{c}").mkdir(parents=True)
        for j in range(n_per_class):
            Image.fromarray(np.full((45, 60, 3), 10 * (k + 1), np.uint8)).save(root / "train" / f"c{c}" / f"{j}.png")
            k += 1


def _index_from_pixels(batch: dict) -> list[int]:
    return [round(v / 10) - 1 for v in batch["inputs"][:, 0, 8, 8].tolist()]


def test_batches_follow_the_sampler_and_skip_corrupt_files_as_the_torch_path(tmp_path):
    _solid_folder(tmp_path)
    # sorted names: c1/2.png, c1/2a.jpg, c1/2b.jpg, c1/3.png ...: three corrupt files in a row,
    # then one alone (c2/0a.jpg, before c2/1.png)
    for name, kind in [("c1/2a.jpg", "truncated"), ("c1/2b.jpg", "garbage"), ("c2/0a.jpg", "empty")]:
        write_corrupt_jpeg(tmp_path / "train" / name, kind)
    ds = ImageFolderDataset(tmp_path, transform=None, max_corrupt_frac=0.5)
    ref = ImageFolderDataset(tmp_path, transform=None, max_corrupt_frac=0.5)
    draws = np.random.default_rng(1).integers(0, len(ds), 40).tolist()
    draws[5:8] = [9, 10, 15]  # the corrupt files, early
    loader = DaliTrainLoader(ds, draws, 8, CropSpec.from_transform(build_train_transform(16, normalize=False)),
                             num_threads=2, prefetch=2, read_threads=2)
    batches = list(loader)
    assert len(batches) == 5 and len(loader) == 5
    got = {k: torch.cat([b[k] for b in batches]).tolist() for k in ("index", "label", "corrupt_skipped")}
    want = [ref[i] for i in draws]
    assert got["index"] == [w["index"] for w in want]
    assert got["label"] == [w["label"] for w in want]
    assert got["corrupt_skipped"] == [w["corrupt_skipped"] for w in want]
    assert sum(got["corrupt_skipped"]) >= 4 and 11 in got["index"]  # 9 -> 11 (two skipped)
    # each crop shows the file its index names (also in the batches DALI ran again)
    names = [ds.path(i).name for i in range(len(ds))]
    solid = [i for i, nm in enumerate(names) if nm.endswith(".png")]
    for b in batches:
        assert [solid[k] for k in _index_from_pixels(b)] == b["index"].tolist()
    assert ds.corrupt_files == ref.corrupt_files and len(ds.corrupt_files) == 3
    assert loader.restarts <= 3  # one pipeline restart at most per corrupt file


def test_corrupt_error_mode_names_the_file(tmp_path):
    _solid_folder(tmp_path, 2, 2)
    bad = write_corrupt_jpeg(tmp_path / "train" / "c0" / "1a.jpg")
    ds = ImageFolderDataset(tmp_path, on_corrupt="error")
    loader = DaliTrainLoader(ds, [0, 2, 1, 3], 2, CropSpec.from_transform(build_train_transform(16, normalize=False)),
                             num_threads=1)
    with pytest.raises(CorruptImageError, match=str(bad)):
        list(loader)


def test_too_many_corrupt_files_stop_the_loader(tmp_path):
    _solid_folder(tmp_path, 2, 2)
    for j in range(2):
        write_corrupt_jpeg(tmp_path / "train" / "c1" / f"0{j}.jpg", "garbage")
    ds = ImageFolderDataset(tmp_path, max_corrupt_frac=0.2)  # 6 files: at most 1.2 corrupt
    loader = DaliTrainLoader(ds, list(range(6)) * 2, 3, CropSpec.from_transform(build_train_transform(16, normalize=False)),
                             num_threads=1)
    with pytest.raises(TooManyCorruptImagesError, match="max_corrupt_frac=0.2"):
        list(loader)


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    _solid_folder(tmp_path, 2, 2)
    ds = ImageFolderDataset(tmp_path)
    os.remove(ds.path(3))
    loader = DaliTrainLoader(ds, [0, 1, 2, 3], 2, CropSpec.from_transform(build_train_transform(16, normalize=False)),
                             num_threads=1)
    with pytest.raises(FileNotFoundError, match=str(ds.path(3))):
        list(loader)


def test_skip_known_corrupt_walks_to_the_next_good_index():
    idx, skipped = skip_known_corrupt(np.array([0, 3, 4, 9]), frozenset({3, 4, 9, 0}), 10)
    assert idx.tolist() == [1, 5, 5, 1] and skipped.tolist() == [1, 2, 1, 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the mixed decoder)")
def test_gpu_mixed_decoder_gives_the_cpu_modes_batches(tmp_path):
    """On a GPU: the same files, labels and replacements of a corrupt file as DALI's CPU mode,
    the crops on the GPU, and a whole-image crop within a grey level or so of the CPU's."""
    _solid_folder(tmp_path, 4, 2)
    write_corrupt_jpeg(tmp_path / "train" / "c0" / "1a.jpg")
    img = Image.fromarray(load_demo_photo("astronaut")).resize((200, 150), Image.Resampling.BICUBIC)
    img.save(tmp_path / "train" / "c1" / "9.jpg", quality=90)
    ds = ImageFolderDataset(tmp_path, max_corrupt_frac=0.5)
    draws = [0, 2, 1, 3, 4, 5, 6, 7]  # 2 is c0/1a.jpg
    spec = CropSpec.from_transform(build_train_transform(16, normalize=False))
    cpu, gpu = (list(DaliTrainLoader(ds, draws, 4, spec, num_threads=2, device_id=d)) for d in (None, 0))
    assert [b["inputs"].device.type for b in gpu] == ["cuda", "cuda"]
    for k in ("index", "label", "corrupt_skipped"):
        assert [b[k].tolist() for b in cpu] == [b[k].tolist() for b in gpu]
    assert [b["inputs"][:, 0, 8, 8].tolist() for b in cpu] == [b["inputs"][:, 0, 8, 8].cpu().tolist() for b in gpu]
    whole = CropSpec.from_transform(build_train_transform(56, scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), hflip=0.0,
                                                          normalize=False))
    i = len(ds) - 1  # c1/9.jpg
    a, b = (_take(DaliTrainLoader(ds, [i] * 2, 2, whole, num_threads=1, device_id=d), 1)[0]["inputs"][0].cpu()
            for d in (None, 0))
    assert (a.float() - b.float()).abs().mean().item() < 1.5


# ------------------------------------------------------------------------- config, resume
def _entry(root: Path, batch: int) -> dict:
    """A ``train_dataloader`` entry as ``_base_/imagenet_data.py`` writes it."""
    return dict(batch_size=batch, num_workers=0, sampler=dict(type="ResumableInfiniteSampler", shuffle=True),
                collate_fn=dict(type="default_collate"),
                dataset=dict(type="PerSampleSeeded", seed=5, dataset=dict(
                    type="ComadImageFolder", root=str(root), split="train",
                    transform=dict(kind="train", img_size=16, normalize=False))))


def test_resumed_order_equals_the_uninterrupted_one_and_the_torch_loaders(tmp_path):
    import comad.engine  # noqa: F401 - registrations
    from comad.engine.dataloader import DALI_KEY, build_dataloader

    _solid_folder(tmp_path, 5, 3)
    b = 4
    dali = dict(_entry(tmp_path, b), **{DALI_KEY: dict(num_threads=1)})
    whole = _take(build_dataloader(dali, seed=7), 6)  # 24 draws: past one epoch of 15 files
    resumed_loader = build_dataloader(dali, seed=7)
    resumed_loader.sampler.skip(3 * b)
    resumed = _take(resumed_loader, 3)
    torch_loader = build_dataloader(_entry(tmp_path, b), seed=7)
    assert type(torch_loader).__name__ == "DataLoader"
    torch_batches = _take(torch_loader, 6)
    for k in ("index", "label"):
        assert [x[k].tolist() for x in whole[3:]] == [x[k].tolist() for x in resumed]
        assert [x[k].tolist() for x in whole] == [x[k].tolist() for x in torch_batches]
    for x in whole + resumed:
        assert _index_from_pixels(x) == x["index"].tolist() and x["inputs"].dtype == torch.uint8


def test_bad_data_options_are_named():
    from mmengine.config import Config

    from comad.engine.dataloader import data_backend

    assert data_backend(Config(dict())) == "torch"
    with pytest.raises(ValueError, match="data.backend must be one of 'torch', 'dali', got 'nvjpeg'"):
        data_backend(Config(dict(data=dict(backend="nvjpeg"))))
    with pytest.raises(ValueError, match=r"data.dali: unknown option\(s\) \['threads'\]"):
        data_backend(Config(dict(data=dict(backend="dali", dali=dict(threads=2)))))


@pytest.mark.heavy
def test_demo_distillation_with_dali_runs_and_resumes(tmp_path):
    cfg = ROOT / "benchmark_configs/distill/comad_vit-tiny-demo-dali_1xb16-120it_photos-64.py"
    wd = tmp_path / "wd"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = ["bash", "tools/distill.sh", str(cfg), "--work-dir", str(wd), "--cfg-options",
            "default_hooks.checkpoint.interval=2", "train_dataloader.batch_size=4",
            f"custom_hooks.0.latest_pointer={tmp_path / 'LATEST_STUDENT'}"]
    r = subprocess.run(base + ["schedule.max_iters=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data: dali" in r.stdout + r.stderr and (wd / "iter_2.pth").is_file()
    r = subprocess.run(base[:5] + ["--resume"] + base[5:] + ["schedule.max_iters=4"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-3000:]
    assert "sampler skipped the draws of 2 iterations" in log and "CoMAD distillation finished: 4 iterations" in log
    assert (wd / "student" / "student.safetensors").is_file()
