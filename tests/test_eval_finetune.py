"""ImageNet protocols on mmengine's Runner: exact resume (the dense tasks' hook, sampler draws skipped),
the fine-tune's recipe, record and model."""
import shutil

import pytest
import torch

from comad.mm_compat import load_local_checkpoint
from transfer.imagenet.config import load_task_config
from transfer.imagenet.tasks import DEFAULT_CONFIGS, DEMO_CONFIGS, IMAGENET_TASKS
from transfer.metrics_io import read_metrics, record_name
from transfer.runner import TaskRequest, run_task


@pytest.fixture(scope="module")
def student(tmp_path_factory, make_student):
    return make_student(tmp_path_factory.mktemp("stu") / "tiny" / "student")


def _opts(data_dir, **kw):
    base = {"demo_data.data_dir": str(data_dir), "demo_data.per_class": 20, "train_dataloader.batch_size": 16,
            "accumulation": 2, "default_hooks.checkpoint.interval": 3, "default_hooks.checkpoint.max_keep_ckpts": -1}
    base.update(kw)
    return tuple(f"{k}={v}" for k, v in base.items())


def _run(task, student, work_dir, opts, max_iters=None):
    return run_task(IMAGENET_TASKS[task], TaskRequest(student, work_dir.parent, work_dir, max_iters, True, opts))


def _iters(work_dir):
    return sorted(int(p.stem.split("_")[1]) for p in work_dir.glob("iter_*.pth"))


@pytest.mark.parametrize("task", ["imagenet-ft", "imagenet-linear", "imagenet-linear-cached"])
def test_resume_is_exact(task, student, tmp_path, tmp_path_factory):
    """A run killed after its checkpoint at iteration 4 and run again ends bit-identical to the
    uninterrupted run: weights, optimizer state, metrics (data order, per-sample augmentation,
    mixup, drop path and every random state come back; no image is loaded to skip the 4 iterations)."""
    opts = _opts(tmp_path_factory.getbasetemp() / "digits20")
    full = _run(task, student, tmp_path / "a", opts)
    assert _iters(tmp_path / "a")[0] == 4  # interval 3 -> 4: a checkpoint must end an accumulation window
    shutil.copytree(tmp_path / "a", tmp_path / "b")  # "killed" after iter_4.pth: later files gone
    for name in [f"iter_{i}.pth" for i in _iters(tmp_path / "b") if i > 4] + ["last_checkpoint", "metrics.json"]:
        (tmp_path / "b" / name).unlink()
    shutil.rmtree(tmp_path / "b" / "release", ignore_errors=True)
    torch.manual_seed(123)  # whatever the process did in between, the checkpoint's random states come back
    resumed = _run(task, student, tmp_path / "b", opts)
    last = _iters(tmp_path / "a")[-1]
    a, b = (load_local_checkpoint(str(tmp_path / w / f"iter_{last}.pth")) for w in "ab")
    assert a["meta"]["iter"] == b["meta"]["iter"] == last == full["protocol"]["iters_run"]
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), f"parameter {k} differs after resume"
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert full["metrics"] == resumed["metrics"]
    log = next(p for p in (tmp_path / "b").glob("*/*.log") if "resume from" in p.read_text()).read_text()
    assert "sampler skipped the draws of 4 iterations (no data loaded)" in log
    assert "random states of iteration 4 restored before its next batch" in log
    assert len(list((tmp_path / "b").glob("*/vis_data/scalars.json"))) == 2  # one log per launch


def test_finetune_record_and_refusal_of_another_student(student, tmp_path, tmp_path_factory, make_student):
    opts = _opts(tmp_path_factory.getbasetemp() / "digits20")
    _run("imagenet-ft", student, tmp_path / "w", opts, max_iters=2)
    rec = read_metrics(tmp_path / "w")
    assert rec["task"] == "imagenet-ft" and rec["demo"] is True and record_name(rec) == "tiny"
    p = rec["protocol"]
    assert p["layer_decay"] == 0.75 and p["drop_path"] == 0.1 and p["mixup"]["mixup_alpha"] == 0.8
    assert p["mixup"]["cutmix_alpha"] == 1.0 and p["mixup"]["label_smoothing"] == 0.1
    assert p["pooling"] == "mean" and p["iters_run"] == 2 and p["optimizer"] == "AdamW"
    assert rec["effective_batch"] == 16 * 2 and p["lr"] == pytest.approx(4e-3 * 32 / 256)
    assert sorted(p["missing_keys"]) == ["fc_norm.bias", "fc_norm.weight", "head.bias", "head.weight"]
    assert p["pos_embed"].startswith("resampled 28x28 -> 4x4")  # exported at 224 (patch 8), fine-tuned at 32
    changes = "\n".join(rec["config_changes"])
    assert "schedule.num_train_images: 500 -> 160" in changes and "train_cfg.max_iters: 32 -> 2" in changes
    other = make_student(tmp_path / "other" / "student", seed=1)
    with pytest.raises(RuntimeError, match="holds a run with other settings .*student_sha256"):
        _run("imagenet-ft", other, tmp_path / "w", opts, max_iters=2)


def test_recipe_config_and_posterize_compat():
    cfg = load_task_config(DEFAULT_CONFIGS["imagenet-ft"])
    m, ow = cfg.model, cfg.optim_wrapper
    assert (cfg.schedule.epochs, ow.paramwise_cfg.layer_decay, m.drop_path_rate) == (300, 0.75, 0.1)
    assert cfg.gpus * cfg.train_dataloader.batch_size == 1024 and ow.optimizer.lr == 5e-4 * 1024 / 256
    assert (m.mixup.mixup_alpha, m.mixup.cutmix_alpha, m.mixup.label_smoothing) == (0.8, 1.0, 0.1)
    image_folder = cfg.train_dataloader.dataset.dataset.dataset
    assert image_folder.type == "ComadImageFolder" and image_folder.transform.auto_augment.startswith("rand-m9")
    short = load_task_config(DEFAULT_CONFIGS["imagenet-ft"].with_name("finetune_vit-tiny_8xb128-100e_in1k-224.py"))
    assert short.schedule.epochs == 100 and short.optim_wrapper.paramwise_cfg.layer_decay == 0.75
    from PIL import Image

    from comad.data.transforms import build_transform, posterize_zero_bits_compat

    demo = load_task_config(DEMO_CONFIGS["imagenet-ft"])
    train = build_transform(demo.train_dataloader.dataset.dataset.dataset.transform)
    assert posterize_zero_bits_compat(train) == 1  # built with the compat: the op is already replaced
    ra = next(t for t in train.transforms if type(t).__name__ == "RandAugment")
    op = next(o for o in ra.ops if o.name.startswith("Posterize"))
    img = Image.new("RGB", (8, 8), (200, 100, 50))
    assert op.aug_fn(img, 0).getextrema() == ((0, 0), (0, 0), (0, 0))  # Pillow 13 raises here
    assert op.aug_fn(img, 8) is img


def test_the_student_is_not_reinitialised_by_the_runner(student):
    """mmengine's init_weights would call timm's VisionTransformer.init_weights (random weights):
    the models keep the student they loaded."""
    from comad.checkpoint import load_vit
    from transfer.imagenet.models import LinearProbe, ViTClassifier

    ref = load_vit(student, img_size=32).model.state_dict()
    for model in (ViTClassifier(student, 10, img_size=32), LinearProbe(10, student=student, img_size=32)):
        net = model.net if hasattr(model, "net") else model.backbone
        model.init_weights()
        got = net.state_dict()
        assert all(torch.equal(got[k], v) for k, v in ref.items() if k in got and not k.startswith(("head", "norm")))


def test_schedule_derived_for_another_gpu_count_accumulation_and_a_cut():
    """The written 8-GPU schedule run on 4 GPUs: the linear lr rule, iterations from the epochs, checkpoint and
    validation intervals still every 1 / 10 epochs; --max-iters compresses it all and drops validation."""
    from transfer.imagenet.config import derive_schedule

    cfg = load_task_config(DEFAULT_CONFIGS["imagenet-ft"])
    sched, changes = derive_schedule(cfg, 1281167, world=4)
    ipe = -(-1281167 // 512)  # 2503
    assert sched["lr"] == pytest.approx(5e-4 * 512 / 256) and cfg.optim_wrapper.optimizer.lr == sched["lr"]
    assert cfg.train_cfg.max_iters == 300 * ipe and cfg.param_scheduler[0].end == cfg.param_scheduler[1].begin == 5 * ipe
    assert cfg.default_hooks.checkpoint.interval == ipe and cfg.train_cfg.val_interval == 10 * ipe
    assert any(c.startswith("default_hooks.checkpoint.interval: 1252 -> 2503") for c in changes)
    cut = load_task_config(DEFAULT_CONFIGS["imagenet-ft"], ["accumulation=3"])
    sched, _ = derive_schedule(cut, 1281167, world=8, max_iters=30)
    assert cut.train_cfg.max_iters == 30 and cut.param_scheduler[-1].end == 30 and cut.val_dataloader is None
    assert cut.default_hooks.checkpoint.interval == 30  # one checkpoint, at the end (a multiple of the accumulation)
    assert sched["effective_batch"] == 8 * 128 * 3
