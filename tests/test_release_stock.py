"""Acceptance of the releases: stock OpenMMLab / timm code in a fresh process, in a folder where the
student file does not exist, loads the release files and predicts what the project's own evaluation
predicts on the same image (2 demo iterations, a tiny student)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from transfer.metrics_io import read_metrics
from comad.repo import REPO_ROOT

pytestmark = pytest.mark.heavy

# Run in the fresh process: nothing of this project is imported but through the config's custom_imports.
_STOCK_PRELUDE = """
import sys, torch
ours = lambda: sorted(m for m in sys.modules if m.split('.')[0] in ('comad', 'transfer'))
assert not ours(), ours()
cfg, ckpt, img, out = sys.argv[1:]
torch.load(ckpt, weights_only=True)  # plain torch, no allow-list
"""
_STOCK_SEG = _STOCK_PRELUDE + """
from mmseg.apis import inference_model, init_model
model = init_model(cfg, ckpt, device='cpu')
assert 'comad.mm_compat' not in sys.modules and 'comad.engine' not in sys.modules, ours()  # mmengine's own loader
r = inference_model(model, img)
torch.save(dict(seg_logits=r.seg_logits.data, pred=r.pred_sem_seg.data, classes=list(model.dataset_meta['classes']),
                modules=ours()), out)
"""
_STOCK_DET = _STOCK_PRELUDE + """
from mmdet.apis import DetInferencer, inference_detector, init_detector
model = init_detector(cfg, ckpt, device='cpu')
assert 'comad.mm_compat' not in sys.modules and 'comad.engine' not in sys.modules, ours()
p = inference_detector(model, img).pred_instances
q = DetInferencer(model=cfg, weights=ckpt, device='cpu', show_progress=False)(img, return_datasamples=True)
q = q['predictions'][0].pred_instances
torch.save(dict(bboxes=p.bboxes, scores=p.scores, labels=p.labels, masks=p.masks, inferencer_bboxes=q.bboxes,
                inferencer_scores=q.scores, inferencer_labels=q.labels, classes=list(model.dataset_meta['classes'])),
           out)
"""
_STOCK_TIMM = _STOCK_PRELUDE + """
import json, timm
from PIL import Image
from timm.models.vision_transformer import VisionTransformer
c = json.load(open(cfg))
model = VisionTransformer(**c['model_args']).eval()
model.load_state_dict(torch.load(ckpt, weights_only=True)['state_dict'], strict=True)
tf = timm.data.create_transform(**timm.data.resolve_data_config(pretrained_cfg=c['pretrained_cfg']))
with torch.no_grad():
    torch.save(dict(logits=model(tf(Image.open(img).convert('RGB'))[None])), out)
"""


def _stock(script: str, folder: Path, record: dict, image: str) -> dict:
    """Run ``script`` in a fresh process on the release files copied into ``folder``; returns what it saved."""
    folder.mkdir(parents=True, exist_ok=True)
    files = [Path(record["release"][k]) for k in ("config", "checkpoint")]
    for f in files:
        shutil.copy(f, folder / f.name)
    out = folder / "out.pt"
    env = {"PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin", "HOME": str(folder)}
    r = subprocess.run([sys.executable, "-c", script, files[0].name, files[1].name, image, out.name], cwd=folder, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return torch.load(out, weights_only=True)


def _own_prediction(work_dir: Path, tmp: Path):
    """The project's own evaluation (its test step, as TestLoop runs it) of the run's checkpoint on the first test image."""
    from mmengine.config import Config

    import transfer  # noqa: F401 - registers the backbone
    from comad.engine.launch import ComadRunner
    from comad.mm_compat import enable_safe_resume
    from transfer.resume import resume_file

    record = read_metrics(work_dir)
    cfg = Config.fromfile(str(work_dir / Path(record["config"]).name))  # mmengine's dump of the run's config
    cfg.work_dir, cfg.resume, cfg.load_from = str(tmp), False, None
    enable_safe_resume()
    runner = ComadRunner.from_cfg(cfg)
    runner.load_checkpoint(str(resume_file(work_dir)))
    batch = next(iter(runner.test_dataloader))
    runner.model.eval()
    with torch.no_grad():
        [sample] = runner.model.test_step(batch)
    return sample


@pytest.fixture(scope="module")
def released(tmp_path_factory, make_student):
    """ade20k + coco demo runs (2 iterations) of a tiny student, the project's predictions, then no student file."""
    from transfer.mm_demo_data import make_demo_data
    from transfer.run import main

    root = tmp_path_factory.mktemp("release")
    student = make_student(root / "run" / "student", "transfer")
    data = make_demo_data(root / "demo" / "transfer", n_det_train=8, n_det_val=4)
    work = root / "work"
    main(["--demo", "--student", str(student), "--data-root", str(data), "--work-dir", str(work), "--max-iters", "2",
          "ade20k", "coco"])
    own = {task: _own_prediction(work / task, root / f"eval-{task}") for task in ("ade20k", "coco")}
    shutil.rmtree(root / "run")  # the student file exists nowhere now
    return dict(work=work, own=own, root=root, student=student)


@pytest.mark.mm
def test_stock_mmseg_loads_the_release_and_predicts_the_same(released):
    record = read_metrics(released["work"] / "ade20k")
    cfg_text = Path(record["release"]["config"]).read_text()
    assert str(released["student"]) not in cfg_text and "init_cfg=None" in cfg_text and "ExactResumeHook" not in cfg_text
    own = released["own"]["ade20k"]
    got = _stock(_STOCK_SEG, released["root"] / "stock-seg", record, own.img_path)
    assert "transfer.backbone" in got["modules"]  # imported by the config's custom_imports, nothing else
    assert got["seg_logits"].shape == own.seg_logits.data.shape
    torch.testing.assert_close(got["seg_logits"], own.seg_logits.data, rtol=1e-4, atol=1e-4)
    assert torch.equal(got["pred"], own.pred_sem_seg.data)
    assert len(got["classes"]) == 150


@pytest.mark.mm
def test_stock_mmdet_and_det_inferencer_load_the_release_and_predict_the_same(released):
    record = read_metrics(released["work"] / "coco")
    own = released["own"]["coco"].pred_instances
    got = _stock(_STOCK_DET, released["root"] / "stock-det", record, released["own"]["coco"].img_path)
    assert len(got["scores"]) == len(own.scores) > 0
    for prefix in ("", "inferencer_"):
        torch.testing.assert_close(got[prefix + "bboxes"], own.bboxes, rtol=1e-4, atol=1e-3)
        torch.testing.assert_close(got[prefix + "scores"], own.scores, rtol=1e-4, atol=1e-5)
        assert torch.equal(got[prefix + "labels"], own.labels)
    assert (got["masks"] == own.masks).float().mean() > 0.999
    assert len(got["classes"]) == 80


def test_stock_timm_loads_the_finetune_release_and_predicts_the_same(tmp_path, make_student):
    from PIL import Image

    from comad.data.transforms import build_transform
    from comad.mm_compat import load_local_checkpoint
    from transfer.imagenet.config import load_task_config
    from transfer.imagenet.models import ViTClassifier
    from transfer.imagenet.tasks import DEMO_CONFIGS, IMAGENET_TASKS
    from transfer.runner import TaskRequest, run_task

    student = make_student(tmp_path / "tiny" / "student")
    opts = (f"demo_data.data_dir={tmp_path / 'demo'}", "demo_data.per_class=20", "train_dataloader.batch_size=16")
    record = run_task(IMAGENET_TASKS["imagenet-ft"], TaskRequest(student, tmp_path, tmp_path / "ft", 2, True, opts))
    meta = torch.load(record["release"]["checkpoint"], weights_only=True)["meta"]
    assert meta["task"] == "imagenet-ft" and meta["iter"] == 2 and len(meta["dataset_meta"]["classes"]) == 10
    # the project's own evaluation: the fine-tune's model (its last checkpoint) and test transform
    cfg = load_task_config(DEMO_CONFIGS["imagenet-ft"], opts)
    model = ViTClassifier(student, 10, img_size=32).eval()
    model.load_state_dict(load_local_checkpoint(str(tmp_path / "ft" / "iter_2.pth"))["state_dict"])
    image = sorted(Path(record["data"]["val"]).rglob("*.JPEG"))[0]
    with torch.no_grad():
        own = model(build_transform(cfg.test_dataloader.dataset.transform)(Image.open(image).convert("RGB"))[None])
    shutil.rmtree(tmp_path / "tiny")
    got = _stock(_STOCK_TIMM, tmp_path / "stock", record, str(image))
    torch.testing.assert_close(got["logits"], own, rtol=1e-5, atol=1e-5)
    assert json.loads(Path(record["release"]["config"]).read_text())["classes"] == meta["dataset_meta"]["classes"]


@pytest.mark.mm
def test_infer_draws_each_task_s_predictions_into_a_png(released, tmp_path):
    import numpy as np
    from PIL import Image

    from transfer.infer import draw_prediction, task_release

    for task, says in (("ade20k", "classes predicted"), ("coco", "detections with score >= 0 drawn")):
        config, ckpt, image = task_release(released["work"] / task)
        drawn = draw_prediction(config, ckpt, image, tmp_path / f"{task}.png", score_thr=0.0)
        assert says in drawn.summary and drawn.out_file.with_suffix(".log").is_file()
        png, src = np.asarray(Image.open(drawn.out_file).convert("RGB")), np.asarray(Image.open(image).convert("RGB"))
        assert png.shape == src.shape and (png != src).any(axis=-1).mean() > 0.05  # an overlay over the image
    with pytest.raises(FileNotFoundError, match=r"infer: image .*nope.jpg: no such file"):
        draw_prediction(config, ckpt, tmp_path / "nope.jpg", tmp_path / "x.png")
