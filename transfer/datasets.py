"""Checks that a benchmark dataset is where and what the configs expect, before any training.

``data_root`` follows OpenMMLab's ``data/`` convention: it holds ``ade/ADEChallengeData2016/``
and ``coco/``. A missing or malformed set raises :class:`DatasetError` naming the expected
layout and how to get the data.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetError", "DataSummary", "ADE_LAYOUT", "COCO_LAYOUT", "check_ade20k", "check_coco", "check_coco_classes"]


class DatasetError(FileNotFoundError):
    """A benchmark dataset is missing or malformed; the message names the file and the layout."""


@dataclass(frozen=True)
class DataSummary:
    """What a check found: the data folder and image counts per split."""

    root: str
    train_images: int
    val_images: int


ADE_LAYOUT = ("{root}/ade/ADEChallengeData2016/images/{{training,validation}}/*.jpg and "
              "{root}/ade/ADEChallengeData2016/annotations/{{training,validation}}/*.png (one PNG per image, same stem)")
ADE_HOWTO = ("Get it: download http://data.csail.mit.edu/places/ADEchallenge/ADEChallengeData2016.zip and unzip it "
             "into {root}/ade/ (mmsegmentation docs, user_guides/2_dataset_prepare.md#ade20k); or run with --demo "
             "for the bundled mini set.")
COCO_LAYOUT = ("{root}/coco/train2017/*.jpg, {root}/coco/val2017/*.jpg, "
               "{root}/coco/annotations/instances_train2017.json and instances_val2017.json")
COCO_HOWTO = ("Get it: download train2017.zip, val2017.zip and annotations_trainval2017.zip from "
              "https://cocodataset.org/#download and unzip them into {root}/coco/ (mmdetection docs, "
              "user_guides/dataset_prepare.md); or run with --demo for the bundled mini set.")


def _fail(problem: str, layout: str, howto: str, root: Path) -> DatasetError:
    return DatasetError(f"{problem}. Expected layout: {layout.format(root=root)}. {howto.format(root=root)}")


def _stems(folder: Path, suffix: str) -> set[str]:
    with os.scandir(folder) as it:
        return {e.name[: -len(suffix)] for e in it if e.name.endswith(suffix)}


def check_ade20k(data_root: str | Path) -> DataSummary:
    """ADE20K (ADEChallengeData2016) under ``data_root/ade/``: folders, and one annotation per image."""
    root = Path(data_root)
    base = root / "ade" / "ADEChallengeData2016"
    counts = {}
    for split in ("training", "validation"):
        img_dir, ann_dir = base / "images" / split, base / "annotations" / split
        for d in (img_dir, ann_dir):
            if not d.is_dir():
                raise _fail(f"ADE20K: folder {d} not found", ADE_LAYOUT, ADE_HOWTO, root)
        imgs, anns = _stems(img_dir, ".jpg"), _stems(ann_dir, ".png")
        if not imgs:
            raise _fail(f"ADE20K: no .jpg images in {img_dir}", ADE_LAYOUT, ADE_HOWTO, root)
        missing = sorted(imgs - anns)
        if missing:
            raise _fail(f"ADE20K: {len(missing)} image(s) in {img_dir} have no annotation in {ann_dir}, e.g. "
                        f"{ann_dir / (missing[0] + '.png')}", ADE_LAYOUT, ADE_HOWTO, root)
        counts[split] = len(imgs)
    return DataSummary(root=str(base), train_images=counts["training"], val_images=counts["validation"])


def _check_coco_split(root: Path, split: str) -> int:
    base = root / "coco"
    img_dir, ann = base / f"{split}2017", base / "annotations" / f"instances_{split}2017.json"
    if not img_dir.is_dir():
        raise _fail(f"COCO: folder {img_dir} not found", COCO_LAYOUT, COCO_HOWTO, root)
    if not ann.is_file():
        raise _fail(f"COCO: annotation file {ann} not found", COCO_LAYOUT, COCO_HOWTO, root)
    try:
        with open(ann, "rb") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _fail(f"COCO: {ann} is not valid JSON ({e})", COCO_LAYOUT, COCO_HOWTO, root) from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data, dict) or not isinstance(data.get(key), list):
            raise _fail(f"COCO: {ann} has no '{key}' list", COCO_LAYOUT, COCO_HOWTO, root)
    with os.scandir(img_dir) as it:
        present = {e.name for e in it}
    for im in data["images"]:
        name = im.get("file_name") if isinstance(im, dict) else None
        if not name:
            raise _fail(f"COCO: {ann} has an image entry without 'file_name': {str(im)[:200]}",
                        COCO_LAYOUT, COCO_HOWTO, root)
        if name not in present:
            raise DatasetError(f"COCO: {ann} names image '{name}' (id {im.get('id')}), but {img_dir / name} does "
                               f"not exist. Re-extract {split}2017.zip into {base}/ or use the matching annotation "
                               f"file.")
    with_ann = {a["image_id"] for a in data["annotations"] if not a.get("iscrowd", 0)}
    return len(with_ann)


def check_coco(data_root: str | Path) -> DataSummary:
    """COCO 2017 under ``data_root/coco/``: folders, JSONs, and every image the JSONs name.

    ``train_images`` counts the train images with at least one non-crowd instance (mmdet's
    ``filter_empty_gt``), which sets the epoch length.
    """
    root = Path(data_root)
    train = _check_coco_split(root, "train")
    val = _check_coco_split(root, "val")
    return DataSummary(root=str(root / "coco"), train_images=train, val_images=val)


def check_coco_classes(data_root: str | Path, classes: tuple[str, ...] | list[str] | None = None) -> None:
    """Refuse COCO annotation files whose category names do not include the classes the dataset keeps.

    mmdet's ``CocoDataset`` keeps only the annotations whose category *name* is one of its
    ``metainfo['classes']`` (COCO's 80 unless the config sets ``metainfo``); with a custom or
    renamed category set every annotation is dropped, the train set comes out empty, and the run
    dies inside mmengine ("need at least one array to concatenate"). This says so beforehand.

    Args:
        data_root: holds ``coco/annotations/instances_{train,val}2017.json``.
        classes: the dataset's class names (None: mmdet's ``CocoDataset.METAINFO['classes']``).

    Raises:
        DatasetError: a file none of whose categories is a kept class, naming the file, the names
            found and the names expected, and how to pass a custom ``metainfo``.
    """
    if classes is None:
        from mmdet.datasets import CocoDataset

        classes = CocoDataset.METAINFO["classes"]
    wanted = set(classes)
    for split in ("train", "val"):
        ann = Path(data_root) / "coco" / "annotations" / f"instances_{split}2017.json"
        with open(ann, "rb") as f:
            names = [c.get("name") for c in json.load(f)["categories"] if isinstance(c, dict)]
        if wanted & set(names):
            continue
        shown = ", ".join(repr(n) for n in names[:10]) + (f", ... ({len(names)} categories)" if len(names) > 10 else "")
        expected = ", ".join(repr(n) for n in list(classes)[:6]) + f", ... ({len(classes)} classes)"
        raise DatasetError(
            f"COCO: {ann} has categories [{shown}], none of which is a class the dataset keeps "
            f"([{expected}]); mmdet would drop every annotation and train on an empty set. For a custom category "
            f"set pass its names as metainfo, e.g. -- --cfg-options "
            f"train_dataloader.dataset.metainfo.classes=\"({', '.join(repr(n) for n in names[:3])}, ...)\" "
            f"(the same for val_dataloader and test_dataloader) and model.roi_head.bbox_head.num_classes / mask_head.num_classes")
