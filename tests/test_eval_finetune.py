"""ImageNet fine-tune: exact resume from an atomic, weights_only-loadable checkpoint."""
import pytest
import torch

from transfer.imagenet.finetune import _posterize_zero_bits_compat, finetune_transforms
from transfer.metrics_io import read_metrics, record_name
from transfer.runner import TaskRequest, run_task
from transfer.imagenet.env import load_task_config
from transfer.imagenet.tasks import DEFAULT_CONFIGS, DEMO_CONFIGS, IMAGENET_TASKS
from comad.io import safe_torch_load


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_student):
    return make_student(tmp_path_factory.mktemp("stu") / "tiny" / "student")


def _opts(tmp_path, **kw):
    base = {"demo_data.data_dir": str(tmp_path / "demo"), "demo_data.per_class": 20, "batch_size": 16, "accum_iter": 2,
            "epochs": 3, "log_interval": 1}
    base.update(kw)
    return [f"{k}={v}" for k, v in base.items()]


def ft(student, data_root, work_dir, max_iters, demo, opts):
    """The fine-tune task through the runner (which writes metrics.json); returns its metrics."""
    request = TaskRequest(student, data_root, work_dir, max_iters, demo, tuple(opts))
    return run_task(IMAGENET_TASKS["imagenet-ft"], request)["metrics"]


def test_resume_is_exact(student, tmp_path):
    full = ft(student, tmp_path / "data", tmp_path / "a", 7, True, _opts(tmp_path))
    first = ft(student, tmp_path / "data", tmp_path / "b", 3, True, _opts(tmp_path))
    state_b3 = safe_torch_load(tmp_path / "b" / "checkpoint_last.pth")  # weights_only=True
    assert (state_b3["epoch"], state_b3["iter_in_epoch"], state_b3["step"]) == (0, 6, 3)  # 10 micro-batches / epoch
    resumed = ft(student, tmp_path / "data", tmp_path / "b", 7, True, _opts(tmp_path))
    a = safe_torch_load(tmp_path / "a" / "checkpoint_last.pth")
    b = safe_torch_load(tmp_path / "b" / "checkpoint_last.pth")
    assert (a["epoch"], a["iter_in_epoch"], a["step"]) == (1, 4, 7)
    assert a["step"] == b["step"] == 7
    for k, v in a["model"].items():
        assert torch.equal(v, b["model"][k]), f"parameter {k} differs after resume"
    assert a["optimizer"]["state"][0]["exp_avg"].equal(b["optimizer"]["state"][0]["exp_avg"])
    assert full == resumed
    assert set(first) == {"top1", "top5"}
    rec = read_metrics(tmp_path / "b")
    assert rec["task"] == "imagenet-ft" and rec["demo"] is True and record_name(rec) == "tiny"
    p = rec["protocol"]
    assert p["layer_decay"] == 0.75 and p["drop_path"] == 0.1 and p["mixup"]["mixup_alpha"] == 0.8
    assert p["mixup"]["cutmix_alpha"] == 1.0 and p["mixup"]["label_smoothing"] == 0.1
    assert p["pooling"] == "mean" and p["iters_run"] == 7
    assert rec["effective_batch"] == 16 * 2
    assert sorted(p["missing_keys"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert p["pos_embed"].startswith("resampled 28x28 -> 4x4")  # exported at 224 (patch 8), fine-tuned at 32
    assert len(list((tmp_path / "b").glob("*/vis_data/scalars.json"))) == 2  # one log per launch


def test_resume_refuses_another_student(student, tmp_path, make_student):
    ft(student, tmp_path / "data", tmp_path / "w", 1, True, _opts(tmp_path))
    other = make_student(tmp_path / "other" / "student", seed=1)
    with pytest.raises(ValueError, match="checkpoint_last.pth: made for"):
        ft(other, tmp_path / "data", tmp_path / "w", 2, True, _opts(tmp_path))


def test_recipe_config_and_posterize_compat():
    cfg = load_task_config(DEFAULT_CONFIGS["imagenet-ft"])
    assert (cfg.epochs, cfg.layer_decay, cfg.drop_path, cfg.num_gpus * cfg.batch_size) == (300, 0.75, 0.1, 1024)
    assert (cfg.mixup.mixup_alpha, cfg.mixup.cutmix_alpha, cfg.mixup.label_smoothing) == (0.8, 1.0, 0.1)
    assert cfg.aug.auto_augment.startswith("rand-m9")
    short = load_task_config(DEFAULT_CONFIGS["imagenet-ft"].with_name("finetune_vit-tiny_8xb128-100e_in1k-224.py"))
    assert short.epochs == 100 and short.layer_decay == 0.75
    train, _ = finetune_transforms(load_task_config(DEMO_CONFIGS["imagenet-ft"]))
    assert _posterize_zero_bits_compat(train) == 1
    from PIL import Image

    ra = next(t for t in train.transforms if type(t).__name__ == "RandAugment")
    op = next(o for o in ra.ops if o.name.startswith("Posterize"))
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert op.aug_fn(img, 0).getextrema() == ((0, 0), (0, 0), (0, 0))  # Pillow 13 raises here
    assert op.aug_fn(img, 8) is img
