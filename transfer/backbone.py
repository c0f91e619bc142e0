"""The CoMAD student as an MMSeg / MMDet backbone.

:class:`ComadMAEViT` is a plain ViT built from timm's ``PatchEmbed`` and ``Block`` (the same
math as ``timm.models.vision_transformer.VisionTransformer``), registered once in mmengine's
root ``MODELS`` registry: mmseg's and mmdet's ``MODELS`` are children of it and look a type up
in their parents when they do not hold it, so both frameworks' configs build it by name after
``custom_imports=dict(imports=['transfer'])``.

Parameter names follow the BEiT/MAE layout that mmseg's
``LearningRateDecayOptimizerConstructor`` (decay_type ``layer_wise``) reads:
``backbone.cls_token`` / ``backbone.pos_embed`` / ``backbone.patch_embed.*`` get layer id 0,
``backbone.layers.<i>.*`` layer ``i + 1``, everything else (final norm, neck, heads) the top
layer. That constructor picks its ViT rule by class name — it must contain ``MAE`` or ``BEiT``
— hence the class name. mmdet 3.3's constructor of the same name only knows ConvNeXt, so the
detection configs name mmseg's (``mmseg.LearningRateDecayOptimizerConstructor``).
"""
from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.utils.checkpoint as cp
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from timm.layers import PatchEmbed
from timm.models.vision_transformer import Block, init_weights_vit_timm
from torch import Tensor, nn

from comad.checkpoint import POS_INTERPOLATION, EncoderCheckpoint, read_encoder, resample_pos_embed
from comad.checkpoint.vit import default_num_heads
from comad.io import CheckpointError

__all__ = ["ComadMAEViT", "to_student_key"]


def to_student_key(name: str) -> str:
    """Backbone parameter name -> the exported student's (timm) key."""
    return "blocks." + name[len("layers."):] if name.startswith("layers.") else name


def _summarise(keys: Sequence[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    return f"[{shown}{', ...' if len(keys) > limit else ''}] ({len(keys)} keys)"


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@MODELS.register_module()
class ComadMAEViT(BaseModule):
    """A ViT encoder that returns feature maps of chosen blocks.

    Args:
        student: a student file, loaded strictly: ``student.safetensors`` / ``student.pth`` from
            :func:`comad.export.export_student`, or any ViT file :mod:`comad.checkpoint` reads (a
            timm or DeiT state dict: arch from the shapes, heads from ``num_heads`` or width / 64);
            ``None`` keeps a random (timm) initialisation, for building configs without weights.
        img_size: training crop (H, W); the student's position embedding is resampled to this
            grid once at load (bicubic, timm ``resample_abs_pos_embed``) and to any other input
            grid on the fly in ``forward``.
        patch_size, embed_dim, depth, num_heads: the architecture; ``None`` takes it from the
            student (its ``arch`` metadata, else its shapes); a value that differs from it is an
            error (naming the file, the differing fields and the missing / unexpected / mis-shaped
            keys). ``num_heads`` is the head count of a student whose file does not state one.
        mlp_ratio: MLP width / embed_dim (timm default 4; the MLP weight shapes check it).
        out_indices: blocks whose outputs are returned (negative counts from the end). The last
            of them must be the last block (otherwise later blocks would be dead weights).
        drop_path_rate: stochastic depth, linear from 0 to this value over the blocks.
        final_norm: apply the student's final LayerNorm to the last block's output.
        with_cp: activation checkpointing of the blocks while training.
    """

    def __init__(
        self,
        student: str | Path | None = None,
        img_size: int | Sequence[int] = 224,
        patch_size: int | None = None,
        embed_dim: int | None = None,
        depth: int | None = None,
        num_heads: int | None = None,
        mlp_ratio: float = 4.0,
        out_indices: Sequence[int] = (3, 5, 7, 11),
        drop_path_rate: float = 0.0,
        final_norm: bool = True,
        with_cp: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        weights = read_encoder(student, num_heads=num_heads) if student is not None else None
        if weights is not None and weights.arch["num_heads"] is None:
            default_num_heads(weights.arch["embed_dim"], f"checkpoint {weights.source}")  # raises: heads unknown
        given = dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
        arch = {}
        for k, v in given.items():  # the config's value wins; load_student reports any difference
            if v is None and weights is None:
                raise ValueError(f"ComadMAEViT: '{k}' is not given and there is no student to read it from")
            arch[k] = int(v if v is not None else weights.arch[k])
        self.patch_size, self.embed_dim = arch["patch_size"], arch["embed_dim"]
        self.depth, self.num_heads = arch["depth"], arch["num_heads"]
        self.img_size = _pair(img_size)
        self.out_indices = tuple(i + self.depth if i < 0 else int(i) for i in out_indices)
        if not self.out_indices or any(not 0 <= i < self.depth for i in self.out_indices):
            raise ValueError(f"ComadMAEViT: out_indices {tuple(out_indices)} out of range for depth {self.depth}")
        if list(self.out_indices) != sorted(set(self.out_indices)) or self.out_indices[-1] != self.depth - 1:
            raise ValueError(
                f"ComadMAEViT: out_indices {tuple(out_indices)} must be increasing and end at the last block "
                f"({self.depth - 1}); blocks after the last output would get no gradient"
            )
        self.final_norm = final_norm
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate

        self.patch_embed = PatchEmbed(img_size=self.img_size, patch_size=self.patch_size, in_chans=3,
                                      embed_dim=self.embed_dim, strict_img_size=False, dynamic_img_pad=True)
        grid = self.grid_size(*self.img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + grid[0] * grid[1], self.embed_dim))
        dpr = torch.linspace(0, drop_path_rate, self.depth).tolist()
        norm = partial(nn.LayerNorm, eps=1e-6)  # timm VisionTransformer's norm
        self.layers = nn.ModuleList(
            Block(self.embed_dim, self.num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=dpr[i], norm_layer=norm)
            for i in range(self.depth)
        )
        self.norm = norm(self.embed_dim)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        self.apply(init_weights_vit_timm)
        self.load_report: dict[str, Any] = {"student": None, "missing_keys": None, "unexpected_keys": None,
                                            "pos_embed": "random init (no student)"}
        if weights is not None:
            self.load_student(weights)

    # ----------------------------------------------------------------------------------------
    def grid_size(self, h: int, w: int) -> tuple[int, int]:
        """Patch grid of an (h, w) input (inputs are padded up to a multiple of the patch)."""
        return math.ceil(h / self.patch_size), math.ceil(w / self.patch_size)

    def expected_student_keys(self) -> list[str]:
        """The exported-student (timm) keys this backbone loads, all of them required."""
        return sorted(to_student_key(k) for k in self.state_dict())

    def load_student(self, weights: EncoderCheckpoint) -> dict[str, Any]:
        """Load a student strictly; the report lands in ``self.load_report``.

        Raises:
            CheckpointError: naming the file, the missing / unexpected keys, the shape
                mismatches and the architecture this backbone expected.
        """
        own = self.state_dict()
        by_student_key = {to_student_key(k): k for k in own}
        file_keys = set(weights.state_dict)
        missing = sorted(set(by_student_key) - file_keys)
        unexpected = sorted(file_keys - set(by_student_key))
        src_grid = weights.arch["img_size"] // weights.arch["patch_size"]
        mismatched = []
        for sk, k in by_student_key.items():
            if sk not in file_keys or sk == "pos_embed":
                continue
            if tuple(weights.state_dict[sk].shape) != tuple(own[k].shape):
                mismatched.append(f"{sk}: file {tuple(weights.state_dict[sk].shape)} vs expected {tuple(own[k].shape)}")
        pos = weights.state_dict.get("pos_embed")
        if pos is not None and (pos.ndim != 3 or pos.shape[-1] != self.embed_dim):
            mismatched.append(f"pos_embed: file {tuple(pos.shape)} vs expected (1, 1 + H*W, {self.embed_dim})")
        own_arch = dict(patch_size=self.patch_size, embed_dim=self.embed_dim, depth=self.depth, num_heads=self.num_heads)
        arch_diff = [f"{k}: {weights.arch[k]} in the file, {v} here" for k, v in own_arch.items() if weights.arch[k] != v]
        if missing or unexpected or mismatched or arch_diff:
            raise CheckpointError(
                f"student {weights.source} does not fit this backbone "
                f"({', '.join(f'{k}={v}' for k, v in own_arch.items())}; file arch {weights.arch}"
                f"{'; differs in ' + ', '.join(arch_diff) if arch_diff else ''}). "
                f"Missing keys {_summarise(missing)}; unexpected keys {_summarise(unexpected)}; "
                f"shape mismatches {mismatched[:8]}{' ...' if len(mismatched) > 8 else ''}. Expected keys: "
                f"{_summarise(self.expected_student_keys(), limit=8)} (cls_token, pos_embed, patch_embed.proj.*, "
                f"blocks.0-{self.depth - 1}.*, norm.*)"
            )
        grid = self.grid_size(*self.img_size)
        state = {k: weights.state_dict[sk] for sk, k in by_student_key.items() if sk != "pos_embed"}
        state["pos_embed"] = resample_pos_embed(pos.float(), grid, src_grid)
        result = self.load_state_dict(state, strict=True)
        self.load_report = {
            "student": str(weights.source),
            "expected_keys": len(by_student_key),
            "missing_keys": list(result.missing_keys),
            "unexpected_keys": list(result.unexpected_keys),
            "pos_embed": (f"{src_grid}x{src_grid} -> {grid[0]}x{grid[1]} at load, to each input grid in forward "
                          f"({POS_INTERPOLATION}, antialiased when shrinking: timm resample_abs_pos_embed; CLS slot kept)"),
        }
        self._is_init = True
        print_log(f"ComadMAEViT: loaded {weights.source} strictly ({len(by_student_key)} keys, missing [], "
                  f"unexpected []); pos_embed {self.load_report['pos_embed']}", logger="current")
        return self.load_report

    def init_weights(self) -> None:
        """Weights are set in ``__init__`` (the student, or timm's init); nothing to do here."""
        self._is_init = True

    # ----------------------------------------------------------------------------------------
    def _pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        own = self.grid_size(*self.img_size)
        if grid == own:
            return self.pos_embed
        return resample_pos_embed(self.pos_embed, grid, own)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, embed_dim, ceil(H/p), ceil(W/p)) map per ``out_indices`` entry."""
        b, _, h, w = x.shape
        grid = self.grid_size(h, w)
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1) + self._pos_embed_for(grid)
        outs = []
        wanted = set(self.out_indices)
        for i, blk in enumerate(self.layers):
            if self.with_cp and self.training and tokens.requires_grad:
                tokens = cp.checkpoint(blk, tokens, use_reentrant=False)
            else:
                tokens = blk(tokens)
            if i in wanted:
                y = self.norm(tokens) if self.final_norm and i == self.depth - 1 else tokens
                outs.append(y[:, 1:].transpose(1, 2).reshape(b, self.embed_dim, grid[0], grid[1]))
        return tuple(outs)
