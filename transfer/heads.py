"""DINOv2's linear segmentation head (``dinov2/eval/segmentation/models/decode_heads/linear_head.py``).

:class:`BNHead`: the chosen backbone maps (``in_index``), resized to the first one's size and
concatenated (``input_transform='resize_concat'``), a BatchNorm, then mmseg's 1x1 classifier
(``cls_seg``). On a frozen backbone it is DINOv2's linear probe: ``in_index`` the last block
("lin.") or the last four blocks (their "ms" head, whose multi-scale + flip test we do not run).
mmseg 1.x does not ship it; registered in mmengine's root ``MODELS`` so mmseg configs find it.
"""
from __future__ import annotations

from typing import Sequence

import torch
from mmcv.cnn import build_norm_layer
from mmengine.registry import MODELS
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.models.utils import resize
from torch import Tensor

__all__ = ["BNHead"]


@MODELS.register_module()
class BNHead(BaseDecodeHead):
    """BatchNorm + a 1x1 convolution on the concatenated maps (``channels`` = their total width)."""

    def __init__(self, resize_factors: Sequence[float] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if self.in_channels != self.channels:
            raise ValueError(f"BNHead: channels {self.channels} must equal the concatenated input width "
                             f"{self.in_channels} (a linear head has no hidden layer)")
        # DINOv2 hard-codes SyncBatchNorm; here it is the config's norm_cfg (SyncBN, BN in one process)
        self.bn = build_norm_layer(self.norm_cfg or dict(type="SyncBN"), self.in_channels)[1]
        self.resize_factors = resize_factors

    def _transform_inputs(self, inputs: Sequence[Tensor]) -> Tensor:
        maps = [inputs[i] for i in self.in_index]
        if self.resize_factors is not None:
            maps = [resize(x, scale_factor=f, mode="bilinear" if f >= 1 else "area")
                    for x, f in zip(maps, self.resize_factors)]
        return torch.cat([resize(x, size=maps[0].shape[2:], mode="bilinear", align_corners=self.align_corners)
                          for x in maps], dim=1)

    def forward(self, inputs: Sequence[Tensor]) -> Tensor:
        return self.cls_seg(self.bn(self._transform_inputs(inputs)))
