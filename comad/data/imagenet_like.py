"""JPEGs of ImageNet's sizes from the photos that ship in packages: realistic files for the data-path benchmarks.

ImageNet-1k's train images are mostly 500 px on the longer side (500 x 375, 375 x 500,
500 x 333 ...; mean about 400 x 350, about 110 KB a file). Here each file is a random crop of
one of :data:`comad.data.demo.DEMO_PHOTOS` with a drawn size, resized (bicubic) and written at
JPEG quality 90:

* longer side: 500 px with probability 0.6, else uniform in [250, 800];
* aspect (long / short): 4/3 (0.6), 3/2 (0.25) or 1 (0.15); portrait with probability 0.25;
* the crop: 30-100 % of the largest window of that aspect in the photo, placed at random.

Decoding cost follows the pixel count and the entropy of the content; the packaged photos are
smoother than the average ImageNet photo, so the files are smaller (:func:`jpeg_stats` reports
their mean size; the benchmark records it). Layout and completeness as
:func:`comad.data.demo.make_demo_imagefolder` (``<out>/train/<photo>/<photo>_NNN.jpg``, made once).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from comad.io import atomic_open

from .demo import DEMO_PHOTOS, load_demo_photo
from .once import build_once

__all__ = ["KIND", "make_imagenet_like", "jpeg_stats", "draw_size"]

#: The ``kind`` of the folder in its completeness marker.
KIND = "imagenet-like-jpegs"
_VERSION = 1
_ASPECTS = ((4 / 3, 0.6), (3 / 2, 0.25), (1.0, 0.15))


def draw_size(rng: np.random.Generator) -> tuple[int, int]:
    """One (width, height) from the size distribution of the module docstring."""
    long = 500 if rng.random() < 0.6 else int(rng.integers(250, 801))
    aspect = float(rng.choice([a for a, _ in _ASPECTS], p=[p for _, p in _ASPECTS]))
    short = max(1, round(long / aspect))
    return (short, long) if rng.random() < 0.25 else (long, short)


def _crop(photo: np.ndarray, w: int, h: int, rng: np.random.Generator) -> np.ndarray:
    ph, pw = photo.shape[:2]
    s = min(pw / w, ph / h) * np.sqrt(rng.uniform(0.3, 1.0))
    cw, ch = max(1, min(pw, round(w * s))), max(1, min(ph, round(h * s)))
    x, y = int(rng.integers(0, pw - cw + 1)), int(rng.integers(0, ph - ch + 1))
    return photo[y:y + ch, x:x + cw]


def make_imagenet_like(out_dir: str | os.PathLike, n_per_photo: int = 48, seed: int = 0, quality: int = 90,
                       photos: Sequence[str] | None = None) -> Path:
    """Write (once) the ImageFolder of ImageNet-sized JPEGs; return ``out_dir``.

    Args:
        out_dir: output folder (created; empty or holding only an earlier set).
        n_per_photo: files per photo (one class per photo).
        seed: seed of the sizes and crops.
        quality: JPEG quality.
        photos: class names (default: all of :data:`DEMO_PHOTOS`).
    """
    names = list(DEMO_PHOTOS) if photos is None else list(photos)
    unknown = [n for n in names if n not in DEMO_PHOTOS]
    if unknown or not names:
        raise ValueError(f"photos: unknown {unknown or 'empty list'}; known: {', '.join(DEMO_PHOTOS)}")
    if not isinstance(n_per_photo, int) or not 1 <= n_per_photo <= 9999:
        raise ValueError(f"n_per_photo: expected an int in [1, 9999], got {n_per_photo!r}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality: expected 1-100, got {quality!r}")
    params = dict(n_per_photo=n_per_photo, seed=seed, quality=quality, photos=names, version=_VERSION)

    def make(tmp: Path) -> dict[str, Any]:
        files: list[str] = []
        for ci, name in enumerate(names):
            photo = load_demo_photo(name)
            rng = np.random.default_rng([seed, ci])
            (tmp / "train" / name).mkdir(parents=True)
            for j in range(n_per_photo):
                w, h = draw_size(rng)
                img = Image.fromarray(_crop(photo, w, h, rng)).resize((w, h), Image.Resampling.BICUBIC)
                rel = f"train/{name}/{name}_{j:04d}.jpg"
                with atomic_open(tmp / rel, "wb") as f:
                    img.save(f, format="JPEG", quality=quality)
                files.append(rel)
        return dict(classes=names, **jpeg_stats(tmp))

    return build_once(out_dir, KIND, params, make)


def jpeg_stats(root: str | os.PathLike) -> dict[str, Any]:
    """Count, mean / median file size (KB = 1000 bytes) and mean width / height of the JPEGs under ``root``."""
    files = sorted(p for p in Path(root).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file())
    if not files:
        return dict(files=0)
    kb = np.asarray([p.stat().st_size / 1000 for p in files])
    sizes = []
    for p in files:
        with Image.open(p) as im:
            sizes.append(im.size)
    wh = np.asarray(sizes, dtype=float)
    return dict(files=len(files), mean_kb=round(float(kb.mean()), 1), median_kb=round(float(np.median(kb)), 1),
                mean_width=round(float(wh[:, 0].mean()), 1), mean_height=round(float(wh[:, 1].mean()), 1),
                mean_megapixels=round(float((wh[:, 0] * wh[:, 1]).mean() / 1e6), 4))
