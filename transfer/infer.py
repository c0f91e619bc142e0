"""Draw a trained model's predictions on an image with mmseg's / mmdet's own visualizers (``tools/infer.py``).

:func:`draw_prediction` loads a config + checkpoint with the stock APIs (``mmseg.apis.init_model``
/ ``mmdet.apis.init_detector``; the release files of a task, :mod:`transfer.mm_release`, or any
other), predicts one image (``inference_model`` / ``inference_detector``) and writes the overlay
with ``SegLocalVisualizer`` / ``DetLocalVisualizer`` into a PNG. :func:`task_release` finds a task
work dir's release (its ``metrics.json``) and the first image of the set it was tested on.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmengine.config import Config

from .metrics_io import read_metrics

__all__ = ["Drawn", "draw_prediction", "task_release", "is_detector"]


@dataclass(frozen=True)
class Drawn:
    """What :func:`draw_prediction` wrote: the PNG, and what it shows (classes / detections drawn)."""

    out_file: Path
    summary: str


def is_detector(cfg: Config) -> bool:
    """An mmdet config (``default_scope='mmdet'``), else an mmseg one."""
    return cfg.get("default_scope") == "mmdet"


def _draw_seg(cfg: Config, checkpoint: str, image: str, out: Path, device: str) -> str:
    import mmcv
    from mmseg.apis import inference_model, init_model
    from mmseg.visualization import SegLocalVisualizer

    model = init_model(cfg, checkpoint, device=device)
    result = inference_model(model, image)
    vis = SegLocalVisualizer.get_instance(f"comad_infer_{uuid.uuid4().hex[:8]}", alpha=0.5)
    vis.dataset_meta = model.dataset_meta
    vis.add_datasample(out.stem, mmcv.imread(image, channel_order="rgb"), data_sample=result, draw_gt=False,
                       show=False, with_labels=True, out_file=str(out))
    labels = result.pred_sem_seg.data.unique().tolist()
    names = [model.dataset_meta["classes"][i] for i in labels if 0 <= i < len(model.dataset_meta["classes"])]
    return f"{len(names)} classes predicted: {', '.join(names[:8])}{', ...' if len(names) > 8 else ''}"


def _draw_det(cfg: Config, checkpoint: str, image: str, out: Path, device: str, score_thr: float) -> str:
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.visualization import DetLocalVisualizer

    model = init_detector(cfg, checkpoint, device=device)
    result = inference_detector(model, image)
    vis = DetLocalVisualizer.get_instance(f"comad_infer_{uuid.uuid4().hex[:8]}")
    vis.dataset_meta = model.dataset_meta
    vis.add_datasample(out.stem, mmcv.imread(image, channel_order="rgb"), data_sample=result, draw_gt=False,
                       show=False, pred_score_thr=score_thr, out_file=str(out))
    scores = result.pred_instances.scores
    kept = int((scores >= score_thr).sum())
    best = f", best score {float(scores.max()):.3f}" if len(scores) else ""
    return f"{kept} of {len(scores)} detections with score >= {score_thr:g} drawn{best}"


def _log_to(log_file: Path) -> Any:
    """A logger whose file ``log_file`` takes mmengine's messages and third-party warnings; its console is quiet."""
    from mmengine.logging import MMLogger

    from comad.console import quiet_logger

    logger = MMLogger.get_instance(f"comad_infer_{uuid.uuid4().hex[:8]}", log_file=str(log_file), file_mode="w")
    quiet_logger(logger)
    return logger


def draw_prediction(config: str | Path, checkpoint: str | Path, image: str | Path, out_file: str | Path,
                    device: str = "cpu", score_thr: float = 0.3) -> Drawn:
    """Predict ``image`` with the model of ``config`` + ``checkpoint`` and write the overlay PNG to ``out_file``.

    mmengine's log of it goes to ``out_file`` with the suffix ``.log`` (and to the console with
    ``--verbose`` / ``COMAD_VERBOSE=1``).

    Raises:
        FileNotFoundError: naming the config, checkpoint or image that does not exist.
    """
    for what, path in (("config", config), ("checkpoint", checkpoint), ("image", image)):
        if not Path(path).is_file():
            raise FileNotFoundError(f"infer: {what} {path}: no such file")
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    from comad.console import prints_to_log

    with prints_to_log(_log_to(out.with_suffix(".log"))):  # mmengine prints "Loads checkpoint ..."
        cfg = Config.fromfile(str(config))  # runs its custom_imports (the backbone)
        if is_detector(cfg):
            summary = _draw_det(cfg, str(checkpoint), str(image), out, device, score_thr)
        else:
            summary = _draw_seg(cfg, str(checkpoint), str(image), out, device)
    return Drawn(out, summary)


def task_release(work_dir: str | Path) -> tuple[Path, Path, Path]:
    """(release config, release checkpoint, first test image) of a dense task's work dir.

    Raises:
        FileNotFoundError / KeyError: naming the ``metrics.json`` without a release, or the image folder.
    """
    record = read_metrics(work_dir)
    if "release" not in record:
        raise KeyError(f"infer: {Path(work_dir) / 'metrics.json'} has no 'release' (a dense task run by this "
                       f"version of tools/run_transfer.sh writes one); pass CONFIG CHECKPOINT IMAGE instead")
    config, ckpt = Path(record["release"]["config"]), Path(record["release"]["checkpoint"])
    prefix = Config.fromfile(str(config)).test_dataloader.dataset.data_prefix
    folder = Path(record["data"]["root"]) / (prefix.get("img") or prefix.get("img_path"))
    images = sorted(p for p in folder.glob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not images:
        raise FileNotFoundError(f"infer: no test image in {folder} (the data root of {Path(work_dir) / 'metrics.json'})")
    return config, ckpt, images[0]
