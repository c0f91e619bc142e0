"""The metrics.json schema shared by the ImageNet and transfer tasks."""
import json

import pytest

from transfer.metrics_io import MetricsError, make_record, read_metrics, record_name, student_name, write_metrics


def _record(**kw):
    base = dict(task="imagenet-knn", metrics={"top1": 50.0, "top5": 90.0}, student="w/run/student/student.safetensors",
                config="benchmark_configs/imagenet/knn_vit-tiny_k20-t0.07_in1k-224.py", seed=0, demo=True)
    base.update(kw)
    return make_record(**base)


def test_roundtrip_fills_provenance(tmp_path):
    rec = _record(protocol={"pooling": "cls", "bn": "none"}, effective_batch=0)
    path = write_metrics(rec, tmp_path / "task")
    back = read_metrics(path)
    assert back["metrics"] == {"top1": 50.0, "top5": 90.0}
    assert back["protocol"]["pooling"] == "cls"
    assert back["git_rev"] and back["date"][:2] == "20" and back["schema_version"] == 1
    assert read_metrics(tmp_path / "task") == back  # the folder works too


def test_fraction_units_are_scaled_to_percent(tmp_path):
    rec = _record(task="coco", metrics={"bbox_mAP": 0.445, "segm_mAP": 0.405}, units="fraction")
    back = read_metrics(write_metrics(rec, tmp_path))
    assert back["metrics"] == pytest.approx({"bbox_mAP": 44.5, "segm_mAP": 40.5})
    assert back["units"] == "percent"


@pytest.mark.parametrize("mutate, words", [
    (lambda r: r.pop("seed"), ["missing required key 'seed'"]),
    (lambda r: r.update(demo="yes"), ["'demo' must be bool"]),
    (lambda r: r.update(seed=True), ["'seed' must be int"]),
    (lambda r: r.update(metrics={"coco/bbox_mAP": 1.0}), ["coco/bbox_mAP", "without '/'"]),
    (lambda r: r.update(metrics={"top1": float("nan")}), ["'top1' must be a finite number"]),
    (lambda r: r.update(task="ade20k", metrics={"aAcc": 80.0}), ["task 'ade20k' must report metric 'mIoU'"]),
    (lambda r: r.update(units="permille"), ["'units' must be one of"]),
    (lambda r: r.update(date="yesterday"), ["'date' must be an ISO 8601 time"]),
])
def test_bad_records_name_file_and_key(tmp_path, mutate, words):
    rec = _record()
    mutate(rec)
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(MetricsError) as e:
        read_metrics(path)
    assert str(path) in str(e.value)
    for w in words:
        assert w in str(e.value)


def test_half_written_and_missing_files(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text('{"task": "imagenet-ft", "metr')
    with pytest.raises(MetricsError, match="not valid JSON"):
        read_metrics(path)
    with pytest.raises(FileNotFoundError, match="nothere"):
        read_metrics(tmp_path / "nothere" / "metrics.json")


def test_write_refuses_invalid_record_and_keeps_old_file(tmp_path):
    rec = _record()
    write_metrics(rec, tmp_path)
    bad = dict(rec, metrics={})
    with pytest.raises(MetricsError, match="'metrics' is empty"):
        write_metrics(bad, tmp_path)
    assert read_metrics(tmp_path)["metrics"]["top1"] == 50.0


def test_student_names():
    assert student_name("work_dirs/comad_vit-tiny_8xb512-300e_in1k-224/student/student.safetensors") == "comad_vit-tiny_8xb512-300e_in1k-224"
    assert student_name("exports/mystudent/student.pth") == "mystudent"
    assert student_name("checkpoints/deit_tiny_patch16_224-a1311bcf.pth") == "deit_tiny_patch16_224-a1311bcf"
    assert record_name(_record(name="deit-tiny-supervised")) == "deit-tiny-supervised"
    assert record_name(_record()) == "run"
