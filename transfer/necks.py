"""ViTDet's simple feature pyramid (Li et al., 2022, "Exploring Plain ViT Backbones for Object
Detection", Fig. 2c): strides 4/8/16/32 from the last ViT map alone, by deconvolution and
pooling. mmdet 3.3 ships it only under ``projects/ViTDet`` (not in the installed package), so
it is written here, registered in mmengine's root ``MODELS`` so MMDet (and MMSeg) configs find
it. In the 1x COCO config mmdet's ``FPN`` follows it (``neck=[SimpleFeaturePyramid, FPN]``); the
ViTDet LSJ config uses :class:`SimpleFPN`, ViTDet's own neck (LN, no top-down path).

For UperNet the segmentation configs use mmseg's own ``Feature2Pyramid`` (BEiT / MAE), which
keeps the backbone width at every stride.
"""
from __future__ import annotations

from typing import Sequence

from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import LayerNorm2d
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SimpleFeaturePyramid", "SimpleFPN", "LN2d", "TinyMIMPyramid"]


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


@MODELS.register_module()
class LN2d(LayerNorm2d):
    """ViTDet's ``LN2d``: a LayerNorm over the channels of a (B, C, H, W) map (eps 1e-6), registered
    so that ``norm_cfg=dict(type='LN2d')`` builds it in mmcv's ``ConvModule`` (mmdet's ViTDet project
    registers its own under the same name, outside the installed package)."""

    def __init__(self, normalized_shape: int, eps: float = 1e-6) -> None:
        super().__init__(normalized_shape, eps=eps)


@MODELS.register_module()
class SimpleFPN(BaseModule):
    """ViTDet's simple feature pyramid with its output convolutions, as mmdet's
    ``projects/ViTDet`` ``SimpleFPN`` (the same arguments): from the last ViT map, strides 4/8/16/32
    (``ConvT-norm-GELU-ConvT``, ``ConvT``, identity, 2x2 max-pool), each followed by a 1x1 and a 3x3
    convolution with ``norm_cfg`` to ``out_channels`` (no top-down path, unlike FPN), then stride-2
    subsampling of the last level for each extra output (P6).

    Args:
        backbone_channel: the backbone width C; in_channels: the four levels' widths (C/4, C/2, C, C).
        out_channels: every output's width; num_outs: outputs (4 levels + extra ones).
        conv_cfg, norm_cfg, act_cfg: of the 1x1 and 3x3 convolutions (ViTDet: LN2d, no activation);
            ``norm_cfg`` also normalises the 4x branch.
    """

    def __init__(self, backbone_channel: int, in_channels: Sequence[int], out_channels: int, num_outs: int,
                 conv_cfg: dict | None = None, norm_cfg: dict | None = None, act_cfg: dict | None = None,
                 init_cfg: dict | None = None) -> None:
        from mmcv.cnn import ConvModule, build_norm_layer

        super().__init__(init_cfg=init_cfg)
        c = int(backbone_channel)
        if list(in_channels) != [c // 4, c // 2, c, c]:
            raise ValueError(f"SimpleFPN: in_channels {list(in_channels)} must be [C/4, C/2, C, C] for "
                             f"backbone_channel C={c}")
        if num_outs < 4:
            raise ValueError(f"SimpleFPN: num_outs={num_outs}; at least the 4 pyramid levels")
        norm = build_norm_layer(norm_cfg, c // 2)[1] if norm_cfg else nn.Identity()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2), norm, nn.GELU(), nn.ConvTranspose2d(c // 2, c // 4, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, c // 2, 2, 2))
        self.fpn3 = nn.Sequential(nn.Identity())
        self.fpn4 = nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2))
        conv = dict(conv_cfg=conv_cfg, norm_cfg=norm_cfg, act_cfg=act_cfg, inplace=False)
        self.lateral_convs = nn.ModuleList(ConvModule(i, out_channels, 1, **conv) for i in in_channels)
        self.fpn_convs = nn.ModuleList(ConvModule(out_channels, out_channels, 3, padding=1, **conv) for _ in in_channels)
        self.backbone_channel, self.num_outs = c, int(num_outs)

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``inputs``: one map, the backbone's last block (B, C, H, W)."""
        if len(inputs) != 1 or inputs[0].shape[1] != self.backbone_channel:
            raise ValueError(f"SimpleFPN takes the last block's map alone ({self.backbone_channel} channels; set the "
                             f"backbone's out_indices to (-1,)), got {[tuple(x.shape) for x in inputs]}")
        x = inputs[0]
        levels = [self.fpn1(x), self.fpn2(x), self.fpn3(x), self.fpn4(x)]
        outs = [conv(lat(y)) for y, lat, conv in zip(levels, self.lateral_convs, self.fpn_convs)]
        while len(outs) < self.num_outs:
            outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return tuple(outs)


@MODELS.register_module()
class TinyMIMPyramid(BaseModule):
    """TinyMIM*-T's feature pyramid (OliverRensu/TinyMIM, ``Segmentation/TinyMIMstar-T/backbone/mae.py``,
    ``fpn1``-``fpn4``), as a neck on the four block maps (C channels, stride 16), widened to
    ``width_factor`` x C:

    - stride 4: ``ConvT(C, 2C) -> norm -> GELU -> ConvT(2C, 4C)``;
    - stride 8: ``ConvT(C, 4C)``;
    - stride 16: ``Conv1x1(C, 4C)``;
    - stride 32: the last map through ``LayerNorm -> Linear(C, last_hidden) -> GELU`` per token (TinyMIM's
      ``conv1x1`` after block 11), then ``Conv3x3 stride 2 (last_hidden, 4C)``.

    Args:
        embed_dim: C; width_factor: the pyramid's width over C (TinyMIM: 4, i.e. 768 for ViT-T);
        last_hidden: the last level's hidden width (TinyMIM: 1280); norm_cfg: of the stride-4 branch.
    """

    def __init__(self, embed_dim: int, width_factor: int = 4, last_hidden: int = 1280,
                 norm_cfg: dict | None = None, init_cfg: dict | None = None) -> None:
        from mmcv.cnn import build_norm_layer

        super().__init__(init_cfg=init_cfg)
        c, w = int(embed_dim), int(width_factor) * int(embed_dim)
        norm = build_norm_layer(norm_cfg or dict(type="SyncBN"), 2 * c)[1]
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(c, 2 * c, 2, stride=2), norm, nn.GELU(),
                                  nn.ConvTranspose2d(2 * c, w, 2, stride=2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(c, w, 2, stride=2))
        self.fpn3 = nn.Conv2d(c, w, kernel_size=1)
        self.last = nn.Sequential(nn.LayerNorm(c), nn.Linear(c, last_hidden), nn.GELU())
        self.fpn4 = nn.Conv2d(last_hidden, w, kernel_size=3, padding=1, stride=2)
        self.embed_dim, self.out_channels = c, w

    def forward(self, inputs: Sequence[Tensor]) -> tuple[Tensor, ...]:
        """``inputs``: four (B, C, H, W) block maps (blocks 3, 5, 7, 11 for a 12-block ViT)."""
        if len(inputs) != 4 or any(x.shape[1] != self.embed_dim for x in inputs):
            raise ValueError(f"TinyMIMPyramid takes four maps of {self.embed_dim} channels, got "
                             f"{[tuple(x.shape) for x in inputs]}")
        last = self.last(inputs[3].permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.fpn1(inputs[0]), self.fpn2(inputs[1]), self.fpn3(inputs[2]), self.fpn4(last)
