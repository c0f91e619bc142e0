"""Dataset checks (clear errors naming the layout / the file) and the demo sets' content."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from comad.data.once import MARKER
from transfer.datasets import DatasetError, check_ade20k, check_coco, check_coco_classes


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    pytest.importorskip("mmdet")
    from transfer.mm_demo_data import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "transfer")


@pytest.mark.mm
def test_demo_sets_pass_the_checks_and_hold_real_labels(demo_root):
    import cv2
    from pycocotools.coco import COCO

    from transfer.mm_demo_data import DET_SCENE, make_demo_data

    ade, coco = check_ade20k(demo_root), check_coco(demo_root)
    check_coco_classes(demo_root)  # the demo uses COCO's own category names
    assert (ade.train_images, ade.val_images) == (32, 8)
    assert (coco.train_images, coco.val_images) == (96, 16)
    # ADE20K: the real VOC photo (full image in val) keeps its people (ADE20K 'person' = 13)
    sems = [cv2.imread(str(p), 0) for p in sorted((demo_root / "ade/ADEChallengeData2016/annotations/validation")
                                                   .glob("*.png"))]
    assert all(s.dtype == np.uint8 and s.max() <= 150 for s in sems) and any((s == 13).any() for s in sems)
    # COCO: the three shape classes under their official ids, exact RLE masks and boxes
    api = COCO(str(demo_root / "coco/annotations/instances_val2017.json"))
    assert len(api.getCatIds()) == 80 and api.loadCats(1)[0]["name"] == "person"
    used = {a["category_id"] for a in api.loadAnns(api.getAnnIds())}
    assert {api.loadCats(c)[0]["name"] for c in used} == {"sports ball", "book", "kite"}
    lo, hi = DET_SCENE["count"]
    for img_id in api.getImgIds():
        anns = api.loadAnns(api.getAnnIds(imgIds=[img_id]))
        assert 1 <= len(anns) <= hi
        masks = np.stack([api.annToMask(a) for a in anns]).astype(bool)
        assert masks.sum(0).max() == 1  # visible parts: one owner per pixel
        for a, m in zip(anns, masks):
            assert m.sum() == pytest.approx(a["area"])  # RLE masks are exact
            ys, xs = np.nonzero(m)
            assert a["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
    # val is drawn with another seed than train: no image repeats
    train_dir, val_dir = demo_root / "coco/train2017", demo_root / "coco/val2017"
    assert not {p.read_bytes() for p in val_dir.glob("*.jpg")} & {p.read_bytes() for p in train_dir.glob("*.jpg")}
    # made once, reused: a second call does not rebuild
    stamp = (demo_root / MARKER).stat().st_mtime_ns
    assert make_demo_data(demo_root) == demo_root and (demo_root / MARKER).stat().st_mtime_ns == stamp


@pytest.mark.mm
def test_demo_scene_overlap_limit():
    from transfer.mm_demo_data import SCENE_SIZE, _backgrounds, _scene

    rng, bgs = np.random.default_rng(3), _backgrounds()
    for _ in range(10):
        img, objs = _scene(rng, bgs, count=(3, 3), size_range=(60, 60), max_overlap=0.0)
        assert img.shape == (*SCENE_SIZE, 3) and len(objs) <= 3
        # no overlap allowed and shapes lie inside the scene: every kept shape is whole, its area that
        # of a 60 px disk, a 60 px square's area-preserving rectangle, an equilateral triangle of radius 30
        whole = {"circle": np.pi * 30 ** 2, "rectangle": 60.0 ** 2, "triangle": 3 * np.sqrt(3) / 4 * 30 ** 2}
        for kind, m in objs:
            assert m.sum() == pytest.approx(whole[kind], rel=0.06), kind


def test_ade_missing_names_layout_and_howto(tmp_path):
    with pytest.raises(DatasetError) as e:
        check_ade20k(tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "ade/ADEChallengeData2016/images/training") in msg
    assert "ADEChallengeData2016/annotations/{training,validation}" in msg and "ADEChallengeData2016.zip" in msg
    assert "--demo" in msg


def test_ade_image_without_annotation(tmp_path):
    base = tmp_path / "ade/ADEChallengeData2016"
    for kind in ("images", "annotations"):
        for split in ("training", "validation"):
            (base / kind / split).mkdir(parents=True)
    (base / "images/training/ADE_train_1.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError, match=r"no annotation in .*annotations/training, e\.g\. .*ADE_train_1\.png"):
        check_ade20k(tmp_path)


def test_coco_missing_names_layout(tmp_path):
    with pytest.raises(DatasetError) as e:
        check_coco(tmp_path)
    assert str(tmp_path / "coco/train2017") in str(e.value)
    assert "annotations/instances_train2017.json" in str(e.value) and "cocodataset.org" in str(e.value)


def _coco(tmp_path, names):
    for split in ("train", "val"):
        (tmp_path / f"coco/{split}2017").mkdir(parents=True, exist_ok=True)
        (tmp_path / "coco/annotations").mkdir(exist_ok=True)
        images = [dict(id=i, file_name=n, width=4, height=4) for i, n in enumerate(names, 1)]
        anns = [dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 2, 2], area=4, iscrowd=0)]
        (tmp_path / f"coco/annotations/instances_{split}2017.json").write_text(
            json.dumps(dict(images=images, annotations=anns, categories=[dict(id=1, name="person")])))


def test_coco_json_naming_a_missing_image(tmp_path):
    _coco(tmp_path, ["a.jpg", "b.jpg"])
    for split in ("train", "val"):
        (tmp_path / f"coco/{split}2017/a.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError) as e:
        check_coco(tmp_path)
    msg = str(e.value)
    assert "instances_train2017.json names image 'b.jpg'" in msg and str(tmp_path / "coco/train2017/b.jpg") in msg
    (tmp_path / "coco/train2017/b.jpg").write_bytes(b"x")
    (tmp_path / "coco/val2017/b.jpg").write_bytes(b"x")
    assert check_coco(tmp_path).train_images == 1


def test_coco_malformed_json(tmp_path):
    _coco(tmp_path, [])
    (tmp_path / "coco/annotations/instances_train2017.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"instances_train2017.json is not valid JSON"):
        check_coco(tmp_path)


@pytest.mark.mm
def test_demo_refuses_foreign_folder(tmp_path):
    from transfer.mm_demo_data import make_demo_data

    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(FileExistsError, match="holds files that this tool did not write .*mine.txt"):
        make_demo_data(tmp_path)
    assert (tmp_path / "mine.txt").read_text() == "keep"
    shutil.rmtree(tmp_path)


def test_coco_custom_category_names_are_named_before_training(tmp_path):
    _coco(tmp_path, [])
    for split in ("train", "val"):
        ann = tmp_path / f"coco/annotations/instances_{split}2017.json"
        data = json.loads(ann.read_text())
        data["categories"] = [dict(id=1, name="Person"), dict(id=2, name="lorry")]  # renamed / custom set
        ann.write_text(json.dumps(data))
    coco80 = ("person", "bicycle", "car")  # what the dataset keeps (mmdet's 80 by default; the check reads them)
    with pytest.raises(DatasetError) as e:
        check_coco_classes(tmp_path, coco80)
    msg = str(e.value)
    assert str(tmp_path / "coco/annotations/instances_train2017.json") in msg
    assert "'Person', 'lorry'" in msg and "'person', 'bicycle', 'car'" in msg
    assert "metainfo.classes" in msg and "num_classes" in msg
    check_coco_classes(tmp_path, ("Person", "lorry"))  # a custom metainfo that names them passes
