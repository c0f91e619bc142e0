"""comad.data: dataset layouts and their errors, file lists, corrupt images, transforms, demo photos."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.dataset import default_collate
from PIL import Image

from comad.data import (
    DEMO_PHOTOS,
    CorruptImageError,
    DatasetLayoutError,
    ImageFolderDataset,
    TooManyCorruptImagesError,
    build_eval_transform,
    build_train_transform,
    build_transform,
    count_corrupt,
    load_demo_photo,
    make_demo_imagefolder,
    write_corrupt_jpeg,
)
from comad.data.once import read_marker
from comad.data.transforms import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD


# ------------------------------------------------------------------------------------ helpers
def _write_img(path: Path, seed: int, size: tuple[int, int] = (20, 16), fmt: str = "JPEG") -> Path:
    """A small image whose pixels encode ``seed`` (so a returned sample can be identified)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((size[1], size[0], 3), seed * 20 % 256, dtype=np.uint8)
    Image.fromarray(arr).save(path, format=fmt)
    return path


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_imagefolder(tmp_path_factory.mktemp("demo") / "comad_demo")


# ------------------------------------------------------------------------------ layout errors
def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=rf"dataset root {tmp_path / 'nope'} does not exist"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        ImageFolderDataset(tmp_path / "afile")


def test_missing_split_lists_what_is_there(tmp_path: Path) -> None:
    (tmp_path / "val").mkdir()
    (tmp_path / "README").write_text("x")
    with pytest.raises(FileNotFoundError) as e:
        ImageFolderDataset(tmp_path, split="train")
    msg = str(e.value)
    assert f"split folder {tmp_path / 'train'} does not exist" in msg
    assert "split='train'" in msg and "README, val" in msg


def test_no_class_folders(tmp_path: Path) -> None:
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetLayoutError) as e:
        ImageFolderDataset(tmp_path)
    msg = str(e.value)
    assert f"no class folders in {tmp_path / 'train'}" in msg
    assert f"expected {tmp_path / 'train'}/<class>/*.{{JPEG" in msg and "empty folder" in msg
    _write_img(tmp_path / "train" / "a.JPEG", 0)
    _write_img(tmp_path / "train" / "b.jpg", 1)
    with pytest.raises(DatasetLayoutError, match=r"2 image files directly in .*train \(e\.g\. a\.JPEG, b\.jpg\)"):
        ImageFolderDataset(tmp_path)


def test_class_folder_without_images(tmp_path: Path) -> None:
    _write_img(tmp_path / "train" / "cat" / "1.JPEG", 0)
    (tmp_path / "train" / "dog").mkdir()
    (tmp_path / "train" / "dog" / "notes.txt").write_text("x")
    (tmp_path / "train" / "eel").mkdir()
    with pytest.raises(DatasetLayoutError) as e:
        ImageFolderDataset(tmp_path)
    msg = str(e.value)
    assert "2 of 3 class folders" in msg and "(dog, eel)" in msg
    assert f"expected {tmp_path / 'train'}/<class>/*.{{JPEG" in msg
    assert f"found in {tmp_path / 'train' / 'dog'}: other files only (notes.txt)" in msg
    ds = ImageFolderDataset(tmp_path, allow_empty_classes=True)
    assert ds.classes == ["cat", "dog", "eel"] and len(ds) == 1


def test_folder_scan_labels_sorted_recursive_and_no_decode_at_init(tmp_path: Path) -> None:
    root = tmp_path / "train"
    _write_img(root / "zebra" / "b.png", 1, fmt="PNG")
    _write_img(root / "zebra" / "a.JPEG", 2)
    _write_img(root / "apple" / "sub" / "x.jpeg", 3)  # nested folders are searched
    (root / "apple" / "._x.jpeg").write_bytes(b"\x00\x00")  # macOS AppleDouble: hidden, ignored
    (root / "apple" / "labels.txt").write_text("not an image")
    (root / "mango").mkdir()
    (root / "mango" / "empty.JPEG").write_bytes(b"")  # accepted at init: nothing is decoded
    ds = ImageFolderDataset(tmp_path, transform=None, on_corrupt="error")
    assert ds.classes == ["apple", "mango", "zebra"]
    assert ds.class_to_idx == {"apple": 0, "mango": 1, "zebra": 2}
    assert [ds.path(i).relative_to(root).as_posix() for i in range(len(ds))] == [
        "apple/sub/x.jpeg", "mango/empty.JPEG", "zebra/a.JPEG", "zebra/b.png"]
    assert ds.labels.tolist() == [0, 1, 2, 2]
    s = ds[3]
    assert s["label"] == 2 and s["index"] == 3 and s["corrupt_skipped"] == 0
    assert s["inputs"].dtype == torch.uint8 and s["inputs"].shape == (3, 16, 20)
    assert int(s["inputs"][0, 0, 0]) == 20  # seed 1 -> value 20 (PNG is lossless)
    with pytest.raises(CorruptImageError, match=rf"corrupt image {root / 'mango' / 'empty.JPEG'}"):
        ds[1]
    with pytest.raises(IndexError, match="index 4 out of range for a dataset of 4 images"):
        ds[4]


def test_bad_options(tmp_path: Path) -> None:
    _write_img(tmp_path / "train" / "a" / "1.jpg", 0)
    with pytest.raises(ValueError, match="on_corrupt: expected 'skip' or 'error', got 'ignore'"):
        ImageFolderDataset(tmp_path, on_corrupt="ignore")
    with pytest.raises(ValueError, match="max_corrupt_frac: expected a fraction in"):
        ImageFolderDataset(tmp_path, max_corrupt_frac=2)


def test_file_missing_at_read_time_is_an_error_not_a_skip(tmp_path: Path) -> None:
    p = _write_img(tmp_path / "train" / "a" / "1.jpg", 0)
    _write_img(tmp_path / "train" / "a" / "2.jpg", 1)
    ds = ImageFolderDataset(tmp_path, on_corrupt="skip")
    p.unlink()
    with pytest.raises(FileNotFoundError, match=rf"image {p} does not exist"):
        ds[0]


# ---------------------------------------------------------------------------------- file list
def test_file_list_with_labels(tmp_path: Path) -> None:
    for i, rel in enumerate(["imgs/x.jpg", "imgs/y.jpg", "other/z.jpg"]):
        _write_img(tmp_path / rel, i)
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "train.txt").write_text("# comment\n\nimgs/x.jpg 5\nimgs/y.jpg 0\nother/z.jpg 7\n")
    # relative file_list that is not under the cwd is looked up under root
    ds = ImageFolderDataset(tmp_path, file_list="meta/train.txt")
    assert ds.file_list == tmp_path / "meta" / "train.txt"
    assert len(ds) == 3 and ds.labels.tolist() == [5, 0, 7] and ds.classes is None
    s = ds[2]
    assert s["label"] == 7 and s["inputs"].shape == (3, 16, 20)


def test_file_list_without_labels_uses_parent_folder(tmp_path: Path) -> None:
    for i, rel in enumerate(["n02/a.jpg", "n01/b.jpg", "n02/c.jpg"]):
        _write_img(tmp_path / rel, i)
    lst = tmp_path / "list.txt"
    lst.write_text("n02/a.jpg\nn01/b.jpg\nn02/c.jpg\n")
    ds = ImageFolderDataset(tmp_path, file_list=lst)
    assert ds.classes == ["n01", "n02"] and ds.labels.tolist() == [1, 0, 1]
    lst.write_text("n02/a.jpg\nloose.jpg\n")
    with pytest.raises(DatasetLayoutError, match=rf"{lst}, line 2: no label and no class folder in 'loose.jpg'"):
        ImageFolderDataset(tmp_path, file_list=lst)


def test_file_list_errors_name_file_and_line(tmp_path: Path) -> None:
    _write_img(tmp_path / "a" / "1.jpg", 0)
    lst = tmp_path / "l.txt"
    with pytest.raises(FileNotFoundError, match=r"file list .*nope\.txt .*does not exist"):
        ImageFolderDataset(tmp_path, file_list="nope.txt")
    lst.write_text("a/1.jpg 0\n\na/missing.jpg 1\na/gone.jpg 1\n")
    with pytest.raises(FileNotFoundError) as e:
        ImageFolderDataset(tmp_path, file_list=lst)
    msg = str(e.value)
    assert f"{lst}, line 3: a/missing.jpg does not exist" in msg and "2 of 3 listed files are missing" in msg
    # with check_files=False the same error comes at read time, still with the line
    ds = ImageFolderDataset(tmp_path, file_list=lst, check_files=False)
    with pytest.raises(FileNotFoundError, match=rf"a/missing.jpg \({lst}, line 3\) does not exist"):
        ds[1]
    cases = {
        "a/1.jpg zero\n": "line 1: the label must be an integer, got 'zero'",
        "a/1.jpg 0 extra\n": "line 1: expected '<relative path> \\[label\\]', got 3 fields",
        "a/1.jpg -1\n": "line 1: the label must be >= 0, got -1",
        "a/1.jpg 0\na/1.jpg\n": "either every line has a label or none has; line 1 has one, line 2 has not",
        "# only a comment\n": "no entries",
    }
    for text, expected in cases.items():
        lst.write_text(text)
        with pytest.raises(DatasetLayoutError, match=rf"{lst}.*{expected}"):
            ImageFolderDataset(tmp_path, file_list=lst)


# ----------------------------------------------------------------------------- corrupt images
@pytest.fixture()
def corrupt_root(tmp_path: Path) -> Path:
    """Class 'a': 0.jpg ok, 1.jpg truncated, 2.jpg garbage, 3.jpg ok; class 'b': 0.jpg, 1.jpg ok."""
    _write_img(tmp_path / "train" / "a" / "0.jpg", 0)
    write_corrupt_jpeg(tmp_path / "train" / "a" / "1.jpg", "truncated")
    write_corrupt_jpeg(tmp_path / "train" / "a" / "2.jpg", "garbage")
    _write_img(tmp_path / "train" / "a" / "3.jpg", 3)
    _write_img(tmp_path / "train" / "b" / "0.jpg", 4)
    _write_img(tmp_path / "train" / "b" / "1.jpg", 5)
    return tmp_path


def test_corrupt_helper_kinds_really_fail_to_decode(tmp_path: Path) -> None:
    for kind in ("truncated", "garbage", "empty"):
        p = write_corrupt_jpeg(tmp_path / f"{kind}.jpg", kind)
        with pytest.raises(OSError):
            with Image.open(p) as im:
                im.convert("RGB")
    with Image.open(tmp_path / "truncated.jpg") as im:  # a real JPEG header: the cut is in the data
        assert im.format == "JPEG" and im.size == (64, 64)
    with pytest.raises(ValueError, match="kind: expected"):
        write_corrupt_jpeg(tmp_path / "x.jpg", "bad")


def test_corrupt_skip_returns_next_and_counts(corrupt_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    ds = ImageFolderDataset(corrupt_root, on_corrupt="skip", max_corrupt_frac=0.5)
    with caplog.at_level(logging.WARNING, logger="comad.data.dataset"):
        s = ds[1]  # 1 truncated, 2 garbage -> 3
    assert s["index"] == 3 and s["corrupt_skipped"] == 2 and s["label"] == 0
    assert int(s["inputs"][0, 0, 0]) in range(57, 64)  # seed 3 -> 60 (JPEG)
    bad1, bad2 = str(corrupt_root / "train/a/1.jpg"), str(corrupt_root / "train/a/2.jpg")
    assert ds.corrupt_files == {bad1, bad2}
    text = caplog.text
    assert bad1 in text and bad2 in text and "skipping" in text
    s2 = ds[2]
    assert s2["index"] == 3 and s2["corrupt_skipped"] == 1
    batch = default_collate([ds[0], s, s2])
    assert batch["inputs"].shape == (3, 3, 16, 20)
    assert batch["corrupt_skipped"].tolist() == [0, 2, 1] and count_corrupt(batch) == 3
    assert batch["label"].dtype == torch.int64


def test_corrupt_error_mode_names_file(corrupt_root: Path) -> None:
    ds = ImageFolderDataset(corrupt_root, on_corrupt="error")
    with pytest.raises(CorruptImageError, match=rf"corrupt image {corrupt_root / 'train/a/1.jpg'}: OSError"):
        ds[1]
    with pytest.raises(CorruptImageError, match=rf"corrupt image {corrupt_root / 'train/a/2.jpg'}: UnidentifiedImageError"):
        ds[2]


def test_too_many_corrupt(corrupt_root: Path) -> None:
    # 6 images, limit 0.2 * 6 = 1.2 files: the first bad file is tolerated, the second is not
    ds = ImageFolderDataset(corrupt_root, on_corrupt="skip", max_corrupt_frac=0.2)
    assert ds[2]["corrupt_skipped"] == 1
    with pytest.raises(TooManyCorruptImagesError, match=r"2 corrupt images .*max_corrupt_frac=0.2 of the 6 images .*a/1\.jpg"):
        ds[1]


def test_corrupt_count_through_dataloader_workers(corrupt_root: Path) -> None:
    """Worker processes cannot share counters: the per-sample field summed by the collate can."""
    ds = ImageFolderDataset(corrupt_root, transform=build_eval_transform(16), max_corrupt_frac=0.5)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=default_collate)
    total, seen = 0, []
    for batch in loader:
        assert batch["inputs"].shape[1:] == (3, 16, 16) and batch["inputs"].dtype == torch.float32
        total += count_corrupt(batch)
        seen += batch["index"].tolist()
    # indices 0..5 requested once: index 1 skips 2 files, index 2 skips 1
    assert total == 3
    assert seen == [0, 3, 3, 3, 4, 5]
    assert ds.corrupt_files == set()  # the main process never decoded: only the batch field tells


# --------------------------------------------------------------------------------- transforms
def test_train_transform_shapes_and_seed_determinism() -> None:
    img = Image.fromarray(load_demo_photo("chelsea"))
    t = build_train_transform(img_size=32)
    torch.manual_seed(0)
    a = torch.stack([t(img) for _ in range(4)])
    torch.manual_seed(0)
    b = torch.stack([t(img) for _ in range(4)])
    torch.manual_seed(1)
    c = torch.stack([t(img) for _ in range(4)])
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[0], a[1])  # random crops differ within a stream


def test_train_transform_normalisation_by_hand() -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
    # full-image, square crop at the same size and no flip: only the normalisation is left
    t = build_train_transform(img_size=24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)
    out = t(Image.fromarray(arr))
    mean = torch.tensor(IMAGENET_DEFAULT_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_DEFAULT_STD).view(3, 1, 1)
    expected = (torch.from_numpy(arr).permute(2, 0, 1).float() / 255 - mean) / std
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    # hflip=1 mirrors it; normalize=False keeps uint8 pixels
    flipped = build_train_transform(24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0)(Image.fromarray(arr))
    torch.testing.assert_close(flipped, expected.flip(-1), atol=1e-5, rtol=0)
    raw = build_train_transform(24, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, normalize=False)(Image.fromarray(arr))
    assert raw.dtype == torch.uint8 and torch.equal(raw, torch.from_numpy(arr).permute(2, 0, 1))
    # downscaling is bicubic (the reference: PIL's own bicubic resize of the full square image)
    down = build_train_transform(12, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, normalize=False)(Image.fromarray(arr))
    for method, same in ((Image.Resampling.BICUBIC, True), (Image.Resampling.BILINEAR, False)):
        ref = torch.from_numpy(np.array(Image.fromarray(arr).resize((12, 12), method))).permute(2, 0, 1)
        assert torch.equal(down, ref) is same


def test_device_normalisation_of_uint8_batches_equals_the_cpu_transform() -> None:
    """ComadDataPreprocessor (the configs' default): uint8 crops normalised on the device equal
    the CPU transform's normalised crops; other batch keys are kept; floats pass unchanged."""
    from comad.engine.preprocess import ComadDataPreprocessor

    img = Image.fromarray(load_demo_photo("chelsea"))
    batch = {}
    for normalize in (True, False):
        t = build_train_transform(img_size=32, normalize=normalize)
        torch.manual_seed(3)
        batch[normalize] = torch.stack([t(img) for _ in range(4)])
    assert batch[False].dtype == torch.uint8
    pre = ComadDataPreprocessor()
    out = pre(dict(inputs=batch[False], corrupt_skipped=torch.tensor([0, 1, 0, 0])))
    torch.testing.assert_close(out["inputs"], batch[True], atol=1e-5, rtol=0)
    assert out["corrupt_skipped"].tolist() == [0, 1, 0, 0]
    assert torch.equal(pre(dict(inputs=batch[True]))["inputs"], batch[True])
    with pytest.raises(ValueError, match="inputs must be uint8 .* or float .*, got torch.int64"):
        pre(dict(inputs=batch[False].long()))
    with pytest.raises(ValueError, match=r"uint8 inputs must be \(B, 3, H, W\), got \(3, 32, 32\)"):
        pre(dict(inputs=batch[False][0]))
    with pytest.raises(ValueError, match="mean and std need 3 values"):
        ComadDataPreprocessor(mean=(0.5, 0.5))


def test_eval_transform_centre_crop() -> None:
    img = Image.fromarray(load_demo_photo("coffee"))  # 600 x 400
    t = build_eval_transform(img_size=32, crop_pct=0.5)
    out = t(img)
    assert out.shape == (3, 32, 32)
    assert torch.equal(out, t(img))  # no randomness
    # resize shorter side to 64 (96 x 64), centre 32 x 32 crop: compare with PIL by hand
    ref = img.resize((96, 64), Image.Resampling.BICUBIC).crop((32, 16, 64, 48))
    ref_t = build_train_transform(32, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0)(ref)
    assert (out - ref_t).abs().mean() < 0.05


def test_transform_option_errors() -> None:
    with pytest.raises(ValueError, match=r"scale: expected 0 < min <= max <= 1, got \(0.5, 0.2\)"):
        build_train_transform(scale=(0.5, 0.2))
    with pytest.raises(ValueError, match="hflip: expected a probability"):
        build_train_transform(hflip=1.5)
    with pytest.raises(ValueError, match="img_size: expected a positive int"):
        build_eval_transform(img_size=0)
    with pytest.raises(ValueError, match="crop_pct"):
        build_eval_transform(crop_pct=1.5)
    with pytest.raises(ValueError, match=r"'kind' must be one of \['eval', 'timm', 'train'\], got 'test'"):
        build_transform(dict(kind="test"))
    with pytest.raises(TypeError, match="unexpected keyword argument 'sizee'"):
        build_transform(dict(kind="train", sizee=3))
    assert build_transform(None) is None
    t = build_transform(dict(kind="train", img_size=16))
    assert t(Image.new("RGB", (40, 30))).shape == (3, 16, 16)


# -------------------------------------------------------------------------------------- demo
def test_demo_layout_and_real_photos(demo_root: Path) -> None:
    marker = read_marker(demo_root)
    assert marker["params"]["img_size"] == 96 and marker["info"]["classes"] == list(DEMO_PHOTOS)
    ds = ImageFolderDataset(demo_root, split="train", transform=build_train_transform(32))
    assert len(ds) == 6 * len(DEMO_PHOTOS) and ds.classes == sorted(DEMO_PHOTOS)
    assert len(ImageFolderDataset(demo_root, split="val")) == 2 * len(DEMO_PHOTOS)
    batch = default_collate([ds[i] for i in range(0, len(ds), 7)])
    assert batch["inputs"].shape == (len(range(0, len(ds), 7)), 3, 32, 32)
    # the first file of a class is the whole photo: decode and compare with the package's pixels
    def psnr(a: np.ndarray, b: Image.Image) -> float:
        return float(10 * np.log10(255**2 / ((a - np.asarray(b, dtype=np.float64)) ** 2).mean()))

    ref = Image.fromarray(load_demo_photo("astronaut")).resize((96, 96), Image.Resampling.BICUBIC)
    got = np.asarray(Image.open(demo_root / "train/astronaut/astronaut_000.jpg").convert("RGB"), dtype=np.float64)
    assert got.shape == (96, 96, 3)
    assert psnr(got, ref) > 28  # JPEG q90 of a busy 96 px image: ~31.7 dB
    other = Image.fromarray(load_demo_photo("chelsea")).resize((96, 96), Image.Resampling.BICUBIC)
    assert psnr(got, other) < 15  # and not another photo (~9.6 dB)
    with Image.open(demo_root / "train/coffee/coffee_003.jpg") as im:
        assert min(im.size) == 96 and im.format == "JPEG"


def test_demo_idempotent_deterministic_and_reparameterised(demo_root: Path, tmp_path: Path) -> None:
    f = demo_root / "train/chelsea/chelsea_002.jpg"
    before = f.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert make_demo_imagefolder(demo_root) == demo_root
    assert time.perf_counter() - t0 < 0.5 and f.stat().st_mtime_ns == before  # not rewritten
    small = make_demo_imagefolder(tmp_path / "d", img_size=32, n_per_image=3, n_val_per_image=1, photos=["chelsea", "china"])
    again = make_demo_imagefolder(tmp_path / "e", img_size=32, n_per_image=3, n_val_per_image=1, photos=["chelsea", "china"])
    files = sorted(p.relative_to(small).as_posix() for p in small.rglob("*.jpg"))
    assert len(files) == 8 and files == sorted(p.relative_to(again).as_posix() for p in again.rglob("*.jpg"))
    assert all((small / r).read_bytes() == (again / r).read_bytes() for r in files)  # byte-identical
    # other parameters rewrite the folder and drop the files they no longer list
    make_demo_imagefolder(tmp_path / "d", img_size=32, n_per_image=2, n_val_per_image=0, photos=["china"])
    assert sorted(p.relative_to(small).as_posix() for p in small.rglob("*.jpg")) == [
        "train/china/china_000.jpg", "train/china/china_001.jpg"]
    assert not (small / "train" / "chelsea").exists() and not (small / "val").exists()


def test_demo_refuses_foreign_folder_and_bad_options(tmp_path: Path) -> None:
    (tmp_path / "data" / "train" / "n01").mkdir(parents=True)
    (tmp_path / "data" / "train" / "n01" / "mine.JPEG").write_bytes(b"x")
    with pytest.raises(FileExistsError, match=r"demo-photos folder .*data holds files .* \(e\.g\. train/n01/mine\.JPEG\)"):
        make_demo_imagefolder(tmp_path / "data", n_per_image=1)
    assert (tmp_path / "data" / "train" / "n01" / "mine.JPEG").read_bytes() == b"x"
    with pytest.raises(ValueError, match=r"photos: unknown \['lena'\]"):
        make_demo_imagefolder(tmp_path / "x", photos=["lena"])
    with pytest.raises(ValueError, match="n_per_image: expected an int"):
        make_demo_imagefolder(tmp_path / "x", n_per_image=0)
    with pytest.raises(KeyError, match="unknown demo photo 'lena'"):
        load_demo_photo("lena")


def test_demo_photos_load_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    def refuse(*a: object, **k: object) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in DEMO_PHOTOS:
        arr = load_demo_photo(name)
        assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3 and min(arr.shape[:2]) >= 256
        assert arr.std() > 10  # a photo, not a flat placeholder


# --------------------------------------------------------------------------- mmengine edge
def test_registry_and_runner_dataloader(tmp_path: Path) -> None:
    from mmengine.registry import DATASETS
    from mmengine.runner import Runner

    import comad.data.registry  # noqa: F401  (registers ComadImageFolder)

    cfg = dict(
        batch_size=4,
        num_workers=0,
        dataset=dict(
            type="ComadImageFolder",
            root=str(tmp_path / "demo"),
            demo=dict(img_size=48, n_per_image=2, n_val_per_image=0, photos=["astronaut", "rocket"]),
            split="train",
            transform=dict(kind="train", img_size=32, scale=(0.2, 1.0), hflip=0.5),
        ),
        sampler=dict(type="DefaultSampler", shuffle=True),
        collate_fn=dict(type="default_collate"),
    )
    loader = Runner.build_dataloader(cfg, seed=0)
    batch = next(iter(loader))
    assert batch["inputs"].shape == (4, 3, 32, 32) and batch["inputs"].dtype == torch.float32
    assert sorted(batch["label"].tolist()) == [0, 0, 1, 1] and count_corrupt(batch) == 0
    ds = DATASETS.build(dict(type="ComadImageFolder", root=str(tmp_path / "demo"), split="train", on_corrupt="error"))
    assert isinstance(ds, ImageFolderDataset) and ds.on_corrupt == "error" and ds.transform is None
    with pytest.raises(ValueError, match="ComadImageFolder: 'root' is required"):
        DATASETS.build(dict(type="ComadImageFolder"))


def test_runner_dataloader_workers_are_seeded(tmp_path: Path) -> None:
    """Same run seed -> same crops from worker processes (mmengine seeds each worker)."""
    from mmengine.runner import Runner

    import comad.data.registry  # noqa: F401

    root = make_demo_imagefolder(tmp_path / "demo", img_size=48, n_per_image=2, n_val_per_image=0, photos=["coffee", "rocket"])

    def first_batch(seed: int) -> dict:
        cfg = dict(
            batch_size=4, num_workers=1, persistent_workers=False,
            dataset=dict(type="ComadImageFolder", root=str(root), transform=dict(kind="train", img_size=24)),
            sampler=dict(type="DefaultSampler", shuffle=True), collate_fn=dict(type="default_collate"),
        )
        return next(iter(Runner.build_dataloader(cfg, seed=seed)))

    a, b, c = first_batch(0), first_batch(0), first_batch(1)
    assert torch.equal(a["index"], b["index"]) and torch.equal(a["inputs"], b["inputs"])
    assert not torch.equal(a["inputs"], c["inputs"])
