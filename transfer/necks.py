"""ViTDet's simple feature pyramid (Li et al., 2022, "Exploring Plain ViT Backbones for Object
Detection", Fig. 2c): strides 4/8/16/32 from the last ViT map alone, by deconvolution and
pooling. mmdet 3.3 ships it only under ``projects/ViTDet`` (not in the installed package), so
it is written here, registered in mmengine's root ``MODELS`` so MMDet (and MMSeg) configs find
it. In the COCO configs mmdet's ``FPN`` follows it (``neck=[SimpleFeaturePyramid, FPN]``).

For UperNet the segmentation configs use mmseg's own ``Feature2Pyramid`` (BEiT / MAE), which
keeps the backbone width at every stride.
"""
from __future__ import annotations

from typing import Sequence

from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
from torch import Tensor, nn

__all__ = ["SimpleFeaturePyramid"]


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """One ViT map (stride s) -> maps at strides s/4, s/2, s, 2s (for s=16: 4, 8, 16, 32).

    Channels follow ViTDet: ``C/4, C/2, C, C`` for the scales ``4, 2, 1, 0.5``
    (``ConvT 2x2 -> LN -> GELU -> ConvT 2x2`` for 4x, ``ConvT 2x2`` for 2x, identity, 2x2 max
    pool). Nothing is widened: the channels are the backbone's, read from ``in_channels``.

    Args:
        in_channels: the backbone width.
        scale_factors: a subset of ``(4.0, 2.0, 1.0, 0.5)``, in the order of the outputs.
    """

    def __init__(self, in_channels: int, scale_factors: Sequence[float] = (4.0, 2.0, 1.0, 0.5),
                 init_cfg: dict | None = None) -> None:
        super().__init__(init_cfg=init_cfg)
        c = int(in_channels)
        if c % 4:
            raise ValueError(f"SimpleFeaturePyramid: in_channels={c} must be divisible by 4 (4x level has C/4)")
        self.in_channels = c
        self.scale_factors = tuple(float(s) for s in scale_factors)
        stages, out_channels = [], []
        for s in self.scale_factors:
            if s == 4.0:
                stage = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, stride=2), LayerNorm2d(c // 2), nn.GELU(),
                                      nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2))
                out_channels.append(c // 4)
            elif s == 2.0:
                stage, _ = nn.ConvTranspose2d(c, c // 2, 2, stride=2), out_channels.append(c // 2)
            elif s == 1.0:
                stage, _ = nn.Identity(), out_channels.append(c)
            elif s == 0.5:
                stage, _ = nn.MaxPool2d(2, stride=2), out_channels.append(c)
            else:
                raise ValueError(f"SimpleFeaturePyramid: scale factor {s} not in (4.0, 2.0, 1.0, 0.5)")
            stages.append(stage)
        self.stages = nn.ModuleList(stages)
        self.out_channels: list[int] = out_channels

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``inputs``: the backbone's outputs; exactly one map (ViTDet uses the last block only)."""
        if len(inputs) != 1:
            raise ValueError(
                f"SimpleFeaturePyramid takes the last block's map only (ViTDet), got {len(inputs)} maps; set the "
                f"backbone's out_indices to (-1,)"
            )
        x = inputs[0]
        if x.shape[1] != self.in_channels:
            raise ValueError(f"SimpleFeaturePyramid: input has {x.shape[1]} channels, in_channels={self.in_channels}")
        return tuple(stage(x) for stage in self.stages)
