"""ImageNet-sized JPEGs from the packaged photos (comad.data.imagenet_like): the size
distribution, the files, and the made-once folder."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from comad.data.imagenet_like import draw_size, jpeg_stats, make_imagenet_like


def test_draw_size_follows_the_stated_distribution():
    rng = np.random.default_rng(0)
    sizes = np.asarray([draw_size(rng) for _ in range(4000)])
    long, short = sizes.max(1), sizes.min(1)
    assert abs((long == 500).mean() - (0.6 + 0.4 / 551)) < 0.03  # 500 itself, or drawn from [250, 800]
    assert long.min() >= 250 and long.max() <= 800
    assert abs((sizes[:, 1] > sizes[:, 0]).mean() - 0.25 * 0.85) < 0.03  # portrait (a square one looks the same)
    aspect = long / short
    for a, p in ((4 / 3, 0.6), (3 / 2, 0.25), (1.0, 0.15)):
        assert abs((np.abs(aspect - a) < 0.01).mean() - p) < 0.03, a
    assert (sizes == (500, 375)).all(1).mean() > 0.2  # ImageNet's most common size


def test_make_imagenet_like_writes_the_drawn_sizes_once(tmp_path):
    out = make_imagenet_like(tmp_path / "jpegs", n_per_photo=4, photos=["astronaut", "coffee"])
    files = sorted((out / "train").rglob("*.jpg"))
    assert [f.parent.name for f in files] == ["astronaut"] * 4 + ["coffee"] * 4
    rng = np.random.default_rng([0, 0])
    with Image.open(files[0]) as im:
        assert im.format == "JPEG" and im.size == draw_size(rng)
    st = jpeg_stats(out)
    assert st["files"] == 8 and st["mean_kb"] > 5 and 250 <= max(st["mean_width"], st["mean_height"]) <= 800
    mtime = files[0].stat().st_mtime_ns
    assert make_imagenet_like(tmp_path / "jpegs", n_per_photo=4, photos=["astronaut", "coffee"]) == out
    assert files[0].stat().st_mtime_ns == mtime  # reused, not rewritten
    with pytest.raises(ValueError, match="unknown"):
        make_imagenet_like(tmp_path / "x", photos=["nope"])
