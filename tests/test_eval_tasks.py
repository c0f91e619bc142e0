"""IMAGENET_TASKS: the task-table interface, data layout errors, configs, demo runs end to end."""
import inspect
import json

import pytest

from comad.data.once import MARKER
from transfer.imagenet.data import imagenet_split_dirs
from transfer.imagenet.demo_data import FASHION_MNIST_DIR, ensure_demo_imagenet
from transfer.metrics_io import read_metrics
from transfer.runner import Task, TaskRequest, run_task
from comad.repo import REPO_ROOT
from transfer.imagenet.config import load_task_config
from transfer.imagenet.tasks import DEFAULT_CONFIGS, DEMO_CONFIGS, IMAGENET_TASKS


def _run(task, student, data_root, work_dir, max_iters=None, demo=False, opts=(), **kw):
    """One ImageNet task through the runner (which writes metrics.json); returns its metrics."""
    request = TaskRequest(student, data_root, work_dir, max_iters, demo, tuple(opts), **kw)
    return run_task(IMAGENET_TASKS[task], request)["metrics"]


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_student):
    return make_student(tmp_path_factory.mktemp("s") / "tiny-student" / "student")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("demo") / "imagenet-demo"


def test_task_table_interface():
    assert {"imagenet-ft", "imagenet-linear", "imagenet-knn"} <= set(IMAGENET_TASKS)
    for name, task in IMAGENET_TASKS.items():
        assert isinstance(task, Task) and task.name == name and task.metric_keys == ("top1", "top5")
        assert len(inspect.signature(task.run).parameters) == 1  # run(request)
        assert (REPO_ROOT / task.description) == DEFAULT_CONFIGS[name]
    for task, path in DEFAULT_CONFIGS.items():
        cfg = load_task_config(path)
        assert cfg.task == task and path.is_file()
        demo = load_task_config(DEMO_CONFIGS[task])  # every task has a demo config, which inherits its config
        assert demo.task == task and demo.protocol_name == cfg.protocol_name and "demo_data" in demo


def test_missing_or_empty_imagenet_names_the_layout(student, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"imagenet/train: no such folder; expected layout .*/imagenet/train/<class>/\*\.JPEG"):
        _run("imagenet-knn", student, tmp_path, tmp_path / "w")
    (tmp_path / "imagenet" / "train" / "n01440764").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="n01440764 holds no images"):
        imagenet_split_dirs(tmp_path / "imagenet")
    (tmp_path / "imagenet" / "train" / "n01440764" / "a.JPEG").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="imagenet/val: no class folders"):
        imagenet_split_dirs(tmp_path / "imagenet")
    (tmp_path / "imagenet" / "val" / "n99999999").mkdir()
    (tmp_path / "imagenet" / "val" / "n99999999" / "b.JPEG").write_bytes(b"")
    with pytest.raises(ValueError, match=r"only in train: \['n01440764'\]"):
        imagenet_split_dirs(tmp_path / "imagenet")


def test_bad_cfg_options_and_student(student, tmp_path):
    with pytest.raises(KeyError, match="unknown config key 'kk'"):
        _run("imagenet-knn", student, tmp_path, tmp_path / "w", None, True, ["kk=3"])
    with pytest.raises(ValueError, match="expected key=value"):
        _run("imagenet-knn", student, tmp_path, tmp_path / "w", None, True, ["k"])
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        _run("imagenet-knn", tmp_path / "nope.safetensors", tmp_path, tmp_path / "w", None, True)
    with pytest.raises(ValueError, match="is for task 'imagenet-knn', not 'imagenet-ft'"):
        _run("imagenet-ft", student, tmp_path, tmp_path / "w", None, True, config=DEFAULT_CONFIGS["imagenet-knn"])
    with pytest.raises(ValueError, match=r"model.num_classes=1000, the data has 10 class folders"):
        _run("imagenet-knn", student, tmp_path, tmp_path / "w", None, True, ["model.num_classes=1000"])
    assert not (tmp_path / "w" / "metrics.json").exists()


def test_demo_data_made_once_and_checked(demo_dir, tmp_path):
    root = ensure_demo_imagenet(tmp_path / "d", img_size=16, per_class=5)
    train, val = imagenet_split_dirs(root)
    assert len(list(train.glob("*/*.JPEG"))) == 40 and len(list(val.glob("*/*.JPEG"))) == 10
    assert sorted(p.name for p in train.iterdir()) == [f"digit_{i}" for i in range(10)]
    mtime = (root / MARKER).stat().st_mtime_ns
    assert ensure_demo_imagenet(tmp_path / "d", img_size=16, per_class=5) == root
    assert (root / MARKER).stat().st_mtime_ns == mtime
    with pytest.raises(ValueError, match="was made with"):
        ensure_demo_imagenet(tmp_path / "d", img_size=32, per_class=5)
    if not FASHION_MNIST_DIR.is_dir():
        with pytest.raises(FileNotFoundError, match="dataset-fashion-mnist"):
            ensure_demo_imagenet(tmp_path / "f", source="fashion-mnist")


@pytest.mark.heavy
def test_probe_tasks_demo_end_to_end(student, demo_dir, tmp_path):
    """k-NN, cached and online probes on the real digits demo: metrics.json, logs, shared cache."""
    opts = [f"demo_data.data_dir={demo_dir}", "demo_data.per_class=40"]
    run = tmp_path / "tiny-student"
    knn = _run("imagenet-knn", student, tmp_path, run / "imagenet-knn", None, True, opts)
    cached = _run("imagenet-linear-cached", student, tmp_path, run / "imagenet-linear-cached", None, True,
                  opts + ["features.pooling=mean"])
    online = _run("imagenet-linear", student, tmp_path, run / "imagenet-linear", 20, True, opts)
    for m in (knn, cached, online):
        assert set(m) == {"top1", "top5"} and 0 <= m["top1"] <= m["top5"] <= 100
    assert knn["top1"] > 30  # 10 classes: chance is 10 %
    rk = read_metrics(run / "imagenet-knn")
    assert rk["protocol"]["k"] == 20 and rk["protocol"]["temperature"] == 0.07 and rk["protocol"]["voting"] == "dino"
    assert rk["protocol"]["pooling"] == "cls" and rk["demo"] is True and rk["seed"] == 0
    assert rk["config"] == "benchmark_configs/imagenet/demo/knn_vit-tiny_k20-t0.07_digits-32.py" and rk["student"].endswith("student.safetensors")
    assert rk["protocol"]["pos_embed"].startswith("resampled") and rk["protocol"]["missing_keys"] == []
    rc = read_metrics(run / "imagenet-linear-cached")
    assert rc["protocol"]["pooling"] == "mean" and rc["protocol"]["bn"] == "BatchNorm1d(affine=False, eps=1e-6)"
    assert rc["effective_batch"] == 64
    ro = read_metrics(run / "imagenet-linear")
    assert ro["protocol"]["protocol"] == "mae-online" and ro["protocol"]["iters_run"] == 20
    assert ro["protocol"]["train_samples"] == 320  # the demo's subset of 500 > the 320 images here
    assert ro["protocol"]["train_aug"] == {"scale": [0.08, 1.0], "hflip": 0.5}
    # one cache per (student, pooling, transform): cls (k-NN) and mean (cached probe); a cls probe reuses k-NN's
    caches = sorted((run / "feature_cache").iterdir())
    assert len(caches) == 2
    _run("imagenet-linear-cached", student, tmp_path, run / "cached-cls", 5, True, opts)
    assert sorted((run / "feature_cache").iterdir()) == caches
    assert "reusing 320 samples" in next((run / "cached-cls").glob("*/*.log")).read_text()
    manifest = json.loads((caches[0] / "train" / "manifest.json").read_text())
    assert manifest["complete"] and manifest["num_samples"] == 320
    for task in ("imagenet-knn", "imagenet-linear-cached", "imagenet-linear"):
        logs = list((run / task).glob("*/vis_data/scalars.json"))
        assert len(logs) == 1 and all(json.loads(line) for line in logs[0].read_text().splitlines())


def test_train_subset_is_class_balanced_and_not_a_key_of_the_cached_protocols(student, demo_dir, tmp_path):
    from comad.data.dataset import ImageFolderDataset
    from transfer.imagenet.data import ClassBalancedSubset

    root = ensure_demo_imagenet(tmp_path / "d", img_size=16, per_class=10)
    full = ImageFolderDataset(root, split="train")
    sub = ClassBalancedSubset(full, num_samples=40, seed=0)
    labels = [int(full.labels[i]) for i in sub.indices]
    assert len(sub) == 40 and sorted(labels.count(c) for c in range(10)) == [4] * 10
    assert ClassBalancedSubset(full, num_samples=40, seed=0).indices == sub.indices
    assert sub[0]["label"] == labels[0] and sub.classes == full.classes
    assert len(ClassBalancedSubset(full, num_samples=None)) == len(full)
    # the cached protocols extract the whole split: a subset is not theirs to set
    with pytest.raises(KeyError, match="unknown config key 'train_dataloader.dataset.dataset.num_samples'"):
        _run("imagenet-linear-cached", student, tmp_path, tmp_path / "w", None, True,
             [f"demo_data.data_dir={demo_dir}", "train_dataloader.dataset.dataset.num_samples=10"])


def test_a_corrupt_evaluation_image_is_named_not_replaced(student, tmp_path):
    """comad.data skips a corrupt training image (warned, counted); an evaluated or cached one is an error
    naming the file, so that every validation image counts exactly once."""
    import shutil

    from comad.data.dataset import CorruptImageError

    root = ensure_demo_imagenet(tmp_path / "d", img_size=32, per_class=10)
    shutil.copytree(root, tmp_path / "bad")
    bad = sorted((tmp_path / "bad" / "val").rglob("*.JPEG"))[3]
    bad.write_bytes(b"not a jpeg")
    opts = [f"demo_data.data_dir={tmp_path / 'bad'}", "demo_data.per_class=10"]
    with pytest.raises(CorruptImageError, match=f"corrupt image {bad}"):
        _run("imagenet-knn", student, tmp_path, tmp_path / "w", None, True, opts)
    assert not (tmp_path / "w" / "metrics.json").exists()
    for task in ("imagenet-ft", "imagenet-linear"):  # the online protocols read the val images through their config
        cfg = load_task_config(DEFAULT_CONFIGS[task])
        assert cfg.test_dataloader.dataset.on_corrupt == "error"
        assert (cfg.get("val_dataloader") or cfg.test_dataloader).dataset.on_corrupt == "error"
