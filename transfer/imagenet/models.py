"""The models of the ImageNet protocols, as mmengine ``BaseModel``s (registered in ``MODELS``).

- :class:`ViTClassifier` — the fine-tune: the student encoder + a fresh classifier, trained end to
  end with timm's ``Mixup`` + ``SoftTargetCrossEntropy`` (or label-smoothed cross-entropy);
- :class:`LinearProbe` — MAE's linear probe: ``BatchNorm1d(affine=False, eps=1e-6)`` + ``Linear``
  (:class:`LinearProbeHead`) on the pooled features of the frozen student (online), or on cached
  features (``student=None``);
- :class:`KNNClassifier` — DINO's weighted k-NN over a bank of cached training features.

Batches are what ``default_collate`` makes of :class:`comad.data.dataset.ImageFolderDataset`'s or
:class:`~transfer.imagenet.data.FeatureDataset`'s samples: ``dict(inputs, label, ...)``, so
``forward(inputs, label, mode)``. ``mode='predict'`` returns one dict per sample,
``{'pred_topk': (k,) class indices, best first, 'gt_label': int}``, for
:class:`~transfer.imagenet.metric.TopKAccuracy`. The student's weights are loaded when the model
is built: ``init_weights`` is a no-op (mmengine's would call timm's ``init_weights`` and
re-initialise the student).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmengine.registry import MODELS
from torch import Tensor, nn

from comad.checkpoint import load_vit
from .features import assert_backbone_unchanged, backbone_snapshot, embed
from .knn import knn_scores

__all__ = ["LinearProbeHead", "ViTClassifier", "LinearProbe", "KNNClassifier", "topk_predictions"]

TOPK = 5  # classes kept per prediction (top-5 accuracy)


def topk_predictions(scores: Tensor, label: Tensor | None) -> list[dict[str, Any]]:
    """One ``{'pred_topk', 'gt_label'}`` per row of ``scores`` (N, C); ties go to the lower class index."""
    k = min(TOPK, scores.shape[1])
    order = torch.sort(scores.detach().float().cpu(), dim=1, descending=True, stable=True).indices[:, :k]
    labels = label.detach().cpu().tolist() if label is not None else [None] * scores.shape[0]
    return [dict(pred_topk=row, gt_label=y) for row, y in zip(order, labels)]


class _StudentModel(BaseModel):
    """A BaseModel whose weights come from the student file at construction."""

    def init_weights(self) -> None:
        """Nothing to initialise: the student was loaded (and the heads initialised) when the model was built."""

    @staticmethod
    def _check_mode(mode: str) -> None:
        if mode not in ("loss", "predict", "tensor"):
            raise ValueError(f"mode {mode!r}: expected 'loss', 'predict' or 'tensor'")


class LinearProbeHead(nn.Module):
    """``BatchNorm1d(affine=False, eps=1e-6)`` (optional) + ``Linear``; weight ~ N(0, 0.01), bias 0."""

    def __init__(self, dim: int, num_classes: int, bn: bool = True) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False, eps=1e-6) if bn else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.bn(x))


def _mixup_and_criterion(mix: dict[str, Any], num_classes: int) -> tuple[Any, nn.Module]:
    """timm ``Mixup`` + ``SoftTargetCrossEntropy`` when mixup / cutmix are on, else (label-smoothed) cross-entropy."""
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    smoothing = float(mix.get("label_smoothing", 0.0))
    if mix.get("mixup_alpha", 0) > 0 or mix.get("cutmix_alpha", 0) > 0:
        return Mixup(num_classes=num_classes, **mix), SoftTargetCrossEntropy()
    if smoothing > 0:
        return None, LabelSmoothingCrossEntropy(smoothing=smoothing)
    return None, nn.CrossEntropyLoss()


@MODELS.register_module()
class ViTClassifier(_StudentModel):
    """The student encoder (timm ``VisionTransformer``) + a fresh classifier, trained end to end.

    Args:
        student: the student file (any file :func:`comad.checkpoint.load_vit` reads; the task sets it).
        num_classes: classes of the classifier (checked against the dataset by the task).
        img_size: input size (the position embedding is resampled to it).
        pooling: ``'mean'`` (patch tokens averaged + a fresh ``fc_norm``: MAE's global pool) or ``'cls'``.
        drop_path_rate: stochastic depth of the encoder.
        head_init_std: the classifier's weights ~ N(0, head_init_std), bias 0 (MAE: 2e-5).
        mixup: timm ``Mixup`` arguments (``mixup_alpha``, ``cutmix_alpha``, ``prob``, ``switch_prob``,
            ``mode``, ``label_smoothing``); None: plain cross-entropy.
    """

    def __init__(self, student: str | Path | None, num_classes: int, img_size: int = 224, pooling: str = "mean",
                 drop_path_rate: float = 0.1, head_init_std: float = 2e-5, mixup: dict[str, Any] | None = None,
                 data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        pool = {"mean": "avg", "cls": "token"}.get(pooling)
        if pool is None:
            raise ValueError(f"model.pooling {pooling!r}: expected 'mean' (MAE: avg + fc_norm) or 'cls'")
        if student is None:
            raise ValueError("model.student: no student file (the task sets it from --student)")
        loaded = load_vit(student, img_size=img_size, num_classes=num_classes, global_pool=pool,
                          drop_path_rate=drop_path_rate)
        nn.init.trunc_normal_(loaded.model.head.weight, std=head_init_std)
        nn.init.zeros_(loaded.model.head.bias)
        self.net, self.arch, self.load_report = loaded.model, dict(loaded.arch), dict(loaded.report)
        self.mixup, self.criterion = _mixup_and_criterion(dict(mixup or {}), num_classes)

    def forward(self, inputs: Tensor, label: Tensor | None = None, mode: str = "tensor", **_: Any) -> Any:
        """``'loss'``: ``{'loss'}`` (mixup applied); ``'predict'``: per-sample top-k; ``'tensor'``: logits (N, C)."""
        self._check_mode(mode)
        if mode == "loss":
            if self.mixup is not None:
                inputs, label = self.mixup(inputs, label)
            return dict(loss=self.criterion(self.net(inputs), label))
        logits = self.net(inputs)
        return topk_predictions(logits, label) if mode == "predict" else logits


@MODELS.register_module()
class LinearProbe(_StudentModel):
    """MAE's linear probe on the frozen student (online) or on cached features (``student=None``).

    The backbone stays in eval mode without gradients; :meth:`assert_backbone_unchanged` checks it
    against its weights at construction (MoCo v3's sanity check). The head runs in fp32 under AMP.

    Args:
        num_classes: classes of the head.
        student: the student file; None: the inputs are already pooled features of ``feature_dim``.
        feature_dim: the features' width (cached protocol only).
        img_size / pooling: the student's input size; ``'cls'`` token or ``'mean'`` of the patch tokens.
        bn: the head's ``BatchNorm1d(affine=False, eps=1e-6)``.
    """

    def __init__(self, num_classes: int, student: str | Path | None = None, feature_dim: int | None = None,
                 img_size: int = 224, pooling: str = "cls", bn: bool = True, data_preprocessor: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.pooling, self.backbone, self.load_report = pooling, None, {}
        if student is not None:
            loaded = load_vit(student, img_size=img_size)
            self.backbone = loaded.model.eval().requires_grad_(False)
            self.load_report, feature_dim = dict(loaded.report), int(self.backbone.embed_dim)
            self._snapshot = backbone_snapshot(self.backbone)
        elif feature_dim is None:
            raise ValueError("model.feature_dim: required without a student (the cached protocol's feature width)")
        self.head = LinearProbeHead(int(feature_dim), num_classes, bn=bn)

    def train(self, mode: bool = True) -> "LinearProbe":  # noqa: D102 - the backbone stays in eval mode
        super().train(mode)
        if self.backbone is not None:
            self.backbone.eval()
        return self

    def assert_backbone_unchanged(self) -> None:
        """Raise ``AssertionError`` naming the first backbone entry that moved (nothing to check on cached features)."""
        if self.backbone is not None:
            assert_backbone_unchanged(self.backbone, self._snapshot)

    def forward(self, inputs: Tensor, label: Tensor | None = None, mode: str = "tensor", **_: Any) -> Any:
        """``'loss'``: ``{'loss'}`` (cross-entropy); ``'predict'``: per-sample top-k; ``'tensor'``: logits."""
        self._check_mode(mode)
        if self.backbone is not None:
            with torch.no_grad():
                inputs = embed(self.backbone, inputs, self.pooling)
        with torch.autocast(inputs.device.type, enabled=False):
            logits = self.head(inputs.float())
        if mode == "loss":
            return dict(loss=F.cross_entropy(logits, label))
        return topk_predictions(logits, label) if mode == "predict" else logits


@MODELS.register_module()
class KNNClassifier(_StudentModel):
    """DINO's weighted k-NN (:func:`~transfer.imagenet.knn.knn_scores`) over the features of a
    :class:`~transfer.imagenet.features.FeatureCache` (the training split), read at the first query.

    Args:
        num_classes: classes of the bank's labels.
        bank: the training split's feature cache folder (the task sets it).
        k / temperature / voting: neighbours, softmax temperature, ``'dino'`` or ``'majority'``.
    """

    def __init__(self, num_classes: int, bank: str | Path | None = None, k: int = 20, temperature: float = 0.07,
                 voting: str = "dino", data_preprocessor: dict | None = None, init_cfg: dict | None = None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.num_classes, self.bank, self.k, self.temperature, self.voting = num_classes, bank, k, temperature, voting
        self._bank: tuple[Tensor, Tensor] | None = None

    def forward(self, inputs: Tensor, label: Tensor | None = None, mode: str = "predict", **_: Any) -> Any:
        """``'predict'``: per-sample top-k of the k-NN votes; ``'tensor'``: the votes (N, C). Nothing to train."""
        self._check_mode(mode)
        if mode == "loss":
            raise ValueError("KNNClassifier has nothing to train: run it with Runner.test()")
        if self._bank is None:
            from .features import FeatureCache

            if self.bank is None:
                raise ValueError("model.bank: no feature cache of the training split (the task sets it)")
            self._bank = FeatureCache(self.bank).load()[:2]
        scores = knn_scores(*self._bank, inputs.cpu(), self.num_classes, self.k, self.temperature, self.voting)
        return topk_predictions(scores, label) if mode == "predict" else scores
