"""A small ImageFolder of real photos that ship inside installed packages (no download).

The photos come from scikit-image's wheel (``skimage.data``: only the files bundled in the
package; nothing here calls ``download_all`` or a fetcher that would download) and
scikit-learn's ``load_sample_image`` (china, flower). Each photo is one class; for each, the
first file is the whole photo (shorter side resized to ``img_size``), the others are seeded
random crops (25-90 % of the area, aspect 3/4-4/3, some mirrored) resized the same way, so the
distillation demo sees real image statistics. The result::

    <out_dir>/train/<photo>/<photo>_000.jpg ...   (n_per_image files per photo)
    <out_dir>/val/<photo>/<photo>_000.jpg ...     (n_val_per_image files per photo, other crops)
    <out_dir>/.comad-complete.json                (marker: parameters, classes and files)

Made once by :func:`comad.data.once.build_once`: a second call with the same parameters finds
the marker and returns at once; other parameters rebuild the folder (in a temporary folder
renamed into place, so an interrupted run leaves no half set). The output is byte-identical for
the same parameters and package versions.
"""
from __future__ import annotations

import io
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from comad.io import atomic_open

from .once import build_once

__all__ = ["DEMO_PHOTOS", "KIND", "load_demo_photo", "make_demo_imagefolder", "write_corrupt_jpeg"]

logger = logging.getLogger(__name__)

#: The ``kind`` of the folder in its completeness marker (:mod:`comad.data.once`).
KIND = "demo-photos"
_VERSION = 1


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        out = getattr(skimage.data, name)()
        return out[0] if isinstance(out, tuple) else out  # stereo_motorcycle -> (left, right, disp)

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


#: Class name -> loader of an RGB uint8 (H, W, 3) photo bundled in an installed package.
DEMO_PHOTOS: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": _skimage("astronaut"),
    "chelsea": _skimage("chelsea"),
    "coffee": _skimage("coffee"),
    "rocket": _skimage("rocket"),
    "hubble_deep_field": _skimage("hubble_deep_field"),
    "retina": _skimage("retina"),
    "immunohistochemistry": _skimage("immunohistochemistry"),
    "motorcycle": _skimage("stereo_motorcycle"),
    "china": _sklearn("china.jpg"),
    "flower": _sklearn("flower.jpg"),
}


def load_demo_photo(name: str) -> np.ndarray:
    """The bundled photo ``name`` as an RGB uint8 (H, W, 3) array.

    Raises:
        KeyError: unknown name (the message lists the known ones).
        ImportError: scikit-image / scikit-learn missing (install the ``demo`` extra).
    """
    if name not in DEMO_PHOTOS:
        raise KeyError(f"unknown demo photo {name!r}; known: {', '.join(DEMO_PHOTOS)}")
    try:
        arr = DEMO_PHOTOS[name]()
    except ImportError as e:
        raise ImportError(
            f"demo photo {name!r} needs scikit-image and scikit-learn ({e}); install them with "
            f"`pip install -e .[demo]`"
        ) from None
    arr = np.asarray(arr)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def _resize_short(img: Image.Image, size: int) -> Image.Image:
    w, h = img.size
    s = size / min(w, h)
    return img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.Resampling.BICUBIC)


def _random_crop(arr: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, bool]:
    h, w = arr.shape[:2]
    for _ in range(20):
        area = rng.uniform(0.25, 0.9) * h * w
        aspect = float(np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3))))
        cw, ch = int(round(np.sqrt(area * aspect))), int(round(np.sqrt(area / aspect)))
        if 0 < cw <= w and 0 < ch <= h:
            break
    else:
        cw, ch = min(w, h), min(w, h)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return arr[y : y + ch, x : x + cw], bool(rng.random() < 0.5)


def _encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_demo_imagefolder(
    out_dir: str | os.PathLike,
    img_size: int = 96,
    n_per_image: int = 6,
    n_val_per_image: int = 2,
    photos: Sequence[str] | None = None,
    seed: int = 0,
    quality: int = 90,
) -> Path:
    """Write (once) the demo ImageFolder of packaged photos; return ``out_dir``.

    Args:
        out_dir: output folder (created; must be empty or hold only an earlier demo).
        img_size: shorter side of every written image, in pixels.
        n_per_image: training files per photo (the first is the whole photo).
        n_val_per_image: validation files per photo (other random crops); 0 writes no ``val``.
        photos: class names to use (default: all of :data:`DEMO_PHOTOS`).
        seed: seed of the crops.
        quality: JPEG quality.

    Returns:
        ``out_dir`` as a ``Path``: use it as the dataset ``root`` with ``split='train'``.
    """
    out = Path(out_dir)
    names = list(DEMO_PHOTOS) if photos is None else list(photos)
    unknown = [n for n in names if n not in DEMO_PHOTOS]
    if unknown or not names:
        raise ValueError(f"photos: unknown {unknown or 'empty list'}; known: {', '.join(DEMO_PHOTOS)}")
    if not isinstance(img_size, int) or img_size < 8:
        raise ValueError(f"img_size: expected an int >= 8, got {img_size!r}")
    if not isinstance(n_per_image, int) or n_per_image < 1 or n_per_image > 999:
        raise ValueError(f"n_per_image: expected an int in [1, 999], got {n_per_image!r}")
    if not isinstance(n_val_per_image, int) or not 0 <= n_val_per_image <= 999:
        raise ValueError(f"n_val_per_image: expected an int in [0, 999], got {n_val_per_image!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality: expected 1-100, got {quality!r}")
    params = dict(
        img_size=img_size, n_per_image=n_per_image, n_val_per_image=n_val_per_image,
        photos=names, seed=seed, quality=quality,
    )
    def make(tmp: Path) -> dict:
        files: list[str] = []
        for ci, name in enumerate(names):
            photo = load_demo_photo(name)
            rng = np.random.default_rng([seed, ci])
            for split, count in (("train", n_per_image), ("val", n_val_per_image)):
                for j in range(count):
                    crop, flip = (photo, False) if split == "train" and j == 0 else _random_crop(photo, rng)
                    img = _resize_short(Image.fromarray(crop), img_size)
                    if flip:
                        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                    rel = f"{split}/{name}/{name}_{j:03d}.jpg"
                    with atomic_open(tmp / rel, "wb") as f:
                        f.write(_encode_jpeg(img, quality))
                    files.append(rel)
        logger.info("wrote %d demo images of %d packaged photos to %s", len(files), len(names), out)
        return dict(classes=names, files=files)

    return build_once(out, KIND, dict(params, version=_VERSION), make)


def write_corrupt_jpeg(path: str | os.PathLike, kind: str = "truncated") -> Path:
    """Write a broken ``.jpg`` for tests.

    Args:
        kind: ``'truncated'`` (a real JPEG cut at half: the header opens, the decode fails),
            ``'garbage'`` (bytes that are no image format) or ``'empty'`` (0 bytes).
    """
    path = Path(path)
    if kind == "truncated":
        img = Image.fromarray(load_demo_photo("astronaut")).resize((64, 64), Image.Resampling.BICUBIC)
        data = _encode_jpeg(img, 90)
        data = data[: len(data) // 2]
    elif kind == "garbage":
        data = bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8))
    elif kind == "empty":
        data = b""
    else:
        raise ValueError(f"kind: expected 'truncated', 'garbage' or 'empty', got {kind!r}")
    with atomic_open(path, "wb") as f:
        f.write(data)
    return path
