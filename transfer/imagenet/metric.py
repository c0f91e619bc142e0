"""Top-k accuracy of the ImageNet protocols (mmengine ``BaseMetric``, registered in ``METRICS``)."""
from __future__ import annotations

from typing import Any, Sequence

import torch
from mmengine.evaluator import BaseMetric
from mmengine.registry import METRICS

__all__ = ["TopKAccuracy"]


@METRICS.register_module()
class TopKAccuracy(BaseMetric):
    """``top{k}`` accuracy in percent for each ``k`` in ``topk`` (top-min(k, classes)).

    Reads the model's predictions (:func:`transfer.imagenet.models.topk_predictions`:
    ``{'pred_topk', 'gt_label'}`` per sample); mmengine gathers them over ranks and drops the
    samples the distributed sampler padded, so every validation image counts once.
    """

    default_prefix = None

    def __init__(self, topk: Sequence[int] = (1, 5), collect_device: str = "cpu", prefix: str | None = None) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not topk or any(int(k) < 1 for k in topk):
            raise ValueError(f"TopKAccuracy topk={topk!r}: expected positive integers")
        self.topk = tuple(int(k) for k in topk)

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:  # noqa: D102
        for s in data_samples:
            if s.get("gt_label") is None:
                raise ValueError("TopKAccuracy: a prediction without 'gt_label' (the dataset gives no labels)")
            self.results.append((torch.as_tensor(s["pred_topk"]), int(s["gt_label"])))

    def compute_metrics(self, results: list) -> dict[str, float]:  # noqa: D102
        if not results:
            raise ValueError("TopKAccuracy: no predictions to score (an empty validation set?)")
        pred = torch.stack([p for p, _ in results])
        gt = torch.tensor([y for _, y in results]).view(-1, 1)
        hit = pred.eq(gt)
        return {f"top{k}": 100.0 * int(hit[:, :k].any(1).sum()) / len(results) for k in self.topk}
