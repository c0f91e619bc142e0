"""The task runner: student resolution, the task table (dense + ImageNet), the request a task
gets and the record the runner writes, and end-to-end demo runs (2 iterations + evaluation per
task on CPU), resume, and the work-dir guard."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import timm
import torch

from transfer.metrics_io import read_metrics
from transfer.runner import Task, TaskResult, task_table
from transfer.imagenet.tasks import IMAGENET_TASKS
from comad.export import export_student
from transfer import tasks as tasks_module
from comad.cli import UsageError
from transfer.run import main, resolve_student
from transfer.tasks import REPO_ROOT, MM_TASKS, TASKS


def _student(folder, dim=48, depth=6, seed=0):
    torch.manual_seed(seed)
    vit = timm.models.vision_transformer.VisionTransformer(img_size=64, patch_size=16, embed_dim=dim, depth=depth,
                                                           num_heads=3, num_classes=0)
    return export_student(vit, folder / "student")


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory):
    return _student(tmp_path_factory.mktemp("run0"))


def test_resolve_student(tmp_path, tiny_student):
    pointer = tmp_path / "LATEST_STUDENT"
    with pytest.raises(UsageError, match=r"LATEST_STUDENT does not exist; run tools/distill.sh .*--student"):
        resolve_student(None, pointer)
    pointer.write_text(str(tmp_path / "gone.safetensors") + "\n")
    with pytest.raises(UsageError, match=r"names '.*gone.safetensors', which is not a file"):
        resolve_student(None, pointer)
    pointer.write_text(str(tiny_student) + "\n")
    assert resolve_student(None, pointer) == tiny_student
    with pytest.raises(UsageError, match=r"--student nope.pth: no such file"):
        resolve_student("nope.pth", pointer)


def test_imagenet_tasks_in_the_table(monkeypatch, tmp_path, tiny_student):
    assert list(TASKS) == [*MM_TASKS, *IMAGENET_TASKS]
    calls = []

    def knn(request):
        calls.append(request)
        return TaskResult(metrics={"top1": 12.5, "top5": 40.0}, config="benchmark_configs/x.py", seed=7,
                          protocol={"k": 10}, info={"extra": 1})

    monkeypatch.setitem(tasks_module.TASKS, "imagenet-knn", Task("imagenet-knn", knn, ("top1",)))
    out = main(["--student", str(tiny_student), "--work-dir", str(tmp_path), "--data-root", str(tmp_path / "d"),
                "--max-iters", "3", "imagenet-knn", "--", "--cfg-options", "k=10"])
    [req] = calls
    assert (req.student, req.data_root, req.work_dir, req.max_iters, req.demo, req.cfg_options) == \
        (tiny_student, tmp_path / "d", tmp_path / "imagenet-knn", 3, False, ("k=10",))
    assert req.seed is None and req.world_size == 1 and req.launcher == "none"  # no --seed: the task's own
    rec = read_metrics(tmp_path / "imagenet-knn")  # the runner wrote a schema-valid record
    assert rec["metrics"] == {"top1": 12.5, "top5": 40.0} and rec["task"] == "imagenet-knn" and not rec["demo"]
    assert (rec["seed"], rec["config"], rec["protocol"], rec["extra"]) == (7, "benchmark_configs/x.py", {"k": 10}, 1)
    assert (rec["max_iters"], rec["cfg_options"], rec["world_size"]) == (3, ["k=10"], 1)
    assert out["imagenet-knn"]["metrics"]["top1"] == 12.5
    main(["--student", str(tiny_student), "--work-dir", str(tmp_path), "--seed", "5", "imagenet-knn"])
    assert calls[-1].seed == 5

    def no_top1(request):
        return TaskResult(metrics={"top5": 1.0}, config="c", seed=0)

    monkeypatch.setitem(tasks_module.TASKS, "imagenet-knn", Task("imagenet-knn", no_top1, ("top1",)))
    with pytest.raises(RuntimeError, match=r"task imagenet-knn returned metrics \['top5'\], missing \['top1'\]"):
        main(["--student", str(tiny_student), "--work-dir", str(tmp_path), "imagenet-knn"])
    assert read_metrics(tmp_path / "imagenet-knn")["metrics"]["top1"] == 12.5  # the earlier record is kept


def test_task_table_refuses_a_name_twice():
    dense = {name: TASKS[name] for name in MM_TASKS}
    with pytest.raises(ValueError, match="task 'ade20k' is defined twice"):
        task_table(dense, {"ade20k": Task("ade20k", print)})
    with pytest.raises(ValueError, match="entry 'x' holds task 'y'"):
        task_table({"x": Task("y", print)})


@pytest.mark.mm
def test_launcher_script_missing_dataset(tmp_path, tiny_student):
    r = subprocess.run([str(REPO_ROOT / "tools/run_transfer.sh"), "--student", str(tiny_student), "--data-root",
                        str(tmp_path), "--work-dir", str(tmp_path / "w"), "coco"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode != 0
    assert f"COCO: folder {tmp_path}/coco/train2017 not found" in r.stderr
    assert "coco/annotations/instances_train2017.json" in r.stderr and "cocodataset.org" in r.stderr


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    from transfer.mm_demo_data import make_demo_data

    # a small COCO part: 2 iterations and a test pass over 4 images are enough here
    return make_demo_data(tmp_path_factory.mktemp("demo") / "transfer", n_det_train=8, n_det_val=4)


@pytest.mark.heavy
@pytest.mark.mm
def test_demo_end_to_end_resume_and_guard(tmp_path, tiny_student, demo_root):
    args = ["--demo", "--student", str(tiny_student), "--data-root", str(demo_root), "--work-dir", str(tmp_path),
            "--max-iters", "2"]
    out = main([*args, "ade20k", "coco"])
    for task in ("ade20k", "coco"):
        rec = read_metrics(tmp_path / task)
        assert set(MM_TASKS[task].metric_keys) <= set(rec["metrics"]) and rec["demo"] is True
        assert rec["protocol"]["missing_keys"] == [] and rec["protocol"]["unexpected_keys"] == []
        assert rec["protocol"]["effective_batch"] == 2  # as run: the demo config's batch, 1 process
        assert rec["protocol_declared"]["effective_batch"] == 16
        assert rec["student"] == str(tiny_student) and len(rec["student_sha256"]) == 64
        assert rec["config"] == MM_TASKS[task].demo_config and rec["git_rev"]  # the demo config ran
        assert any("IterBasedTrainLoop(max_iters=2)" in c for c in rec["config_changes"])
        assert (tmp_path / task / "iter_2.pth").is_file()
    assert 0.0 <= out["ade20k"]["metrics"]["mIoU"] <= 100.0
    assert out["coco"]["units"] == "fraction" and all(0.0 <= v <= 1.0 for v in out["coco"]["metrics"].values())
    assert "[demo: mask-rcnn_comad-vit-t-sfp_1xb2-120it_coco-demo-333x200.py]" in out["coco"]["protocol"]["name"]
    assert "cut to 2 iterations" in out["coco"]["protocol"]["schedule"]

    # a second run with the same settings resumes from iter_2.pth (no training left) and evaluates the
    # same weights again: identical metrics
    first = json.loads((tmp_path / "ade20k/metrics.json").read_text())["metrics"]
    again = main([*args, "ade20k"])["ade20k"]
    assert again["metrics"] == first
    log = (tmp_path / "ade20k" / again["log_dir"].rsplit("/", 1)[-1] / (again["log_dir"].rsplit("/", 1)[-1] + ".log"))
    text = log.read_text()
    assert "resumed" in text.lower() and "Iter(train)" not in text

    # another student into the same work dir is refused, naming the differing setting
    other = _student(tmp_path / "other", seed=1)
    with pytest.raises(RuntimeError, match=r"holds a run with other settings .*student"):
        main(["--demo", "--student", str(other), "--data-root", str(demo_root), "--work-dir", str(tmp_path),
              "--max-iters", "2", "ade20k"])
    # ... and with --archive the earlier run is moved aside (nothing deleted) and the new one starts afresh
    rec = main(["--demo", "--student", str(other), "--data-root", str(demo_root), "--work-dir", str(tmp_path),
                "--max-iters", "2", "--archive", "ade20k"])["ade20k"]
    [old] = (tmp_path / "ade20k").glob("superseded_*")
    assert {p.name for p in old.iterdir()} >= {"iter_2.pth", "transfer_run.json", "metrics.json", "release"}
    assert json.loads((old / "metrics.json").read_text())["metrics"] == first
    assert rec["student_sha256"] != json.loads((old / "transfer_run.json").read_text())["student_sha256"]
    assert json.loads((tmp_path / "ade20k/transfer_run.json").read_text())["student_sha256"] == rec["student_sha256"]


def test_multi_gpu_reexecs_under_torchrun(monkeypatch, tmp_path, tiny_student):
    seen = []

    def fake_execv(path, argv):
        seen.append(argv)
        raise SystemExit(0)

    monkeypatch.setattr("os.execv", fake_execv)
    with pytest.raises(SystemExit):
        main(["--gpus", "8", "--student", str(tiny_student), "--data-root", str(tmp_path), "ade20k", "--", "--cfg-options",
              "model.backbone.drop_path_rate=0.05"])
    argv = seen[0]
    assert argv[:6] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=8", "-m"]
    assert argv[6:] == ["transfer.run", "--gpus", "8", "--student", str(tiny_student), "--data-root", str(tmp_path),
                        "ade20k", "--launcher", "pytorch", "--", "--cfg-options", "model.backbone.drop_path_rate=0.05"]


@pytest.mark.mm
def test_coco_categories_the_config_does_not_keep_stop_the_task_before_the_runner(tmp_path, tiny_student):
    from mmengine.config import Config

    from transfer.datasets import DatasetError
    from transfer.mm_runner import _config_classes

    for split in ("train", "val"):
        (tmp_path / f"coco/{split}2017").mkdir(parents=True)
        (tmp_path / f"coco/{split}2017/a.jpg").write_bytes(b"x")
        (tmp_path / "coco/annotations").mkdir(exist_ok=True)
        (tmp_path / f"coco/annotations/instances_{split}2017.json").write_text(json.dumps(dict(
            images=[dict(id=1, file_name="a.jpg", width=4, height=4)], categories=[dict(id=1, name="lorry")],
            annotations=[dict(id=1, image_id=1, category_id=1, bbox=[0, 0, 2, 2], area=4, iscrowd=0)])))
    with pytest.raises(DatasetError, match=r"instances_train2017.json has categories \['lorry'\].*'person', 'bicycle'"):
        main(["--student", str(tiny_student), "--data-root", str(tmp_path), "--work-dir", str(tmp_path / "w"), "coco"])
    assert not list((tmp_path / "w" / "coco").glob("*"))  # no runner was built: no log, no record
    wrapped = Config(dict(train_dataloader=dict(dataset=dict(type="RepeatDataset", times=2, dataset=dict(
        type="CocoDataset", metainfo=dict(classes=("lorry",)))))))
    assert _config_classes(wrapped) == ("lorry",)  # the classes a custom metainfo keeps (through wrappers)
    assert _config_classes(Config(dict(train_dataloader=dict(dataset=dict(type="CocoDataset"))))) is None  # mmdet's
