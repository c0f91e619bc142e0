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
from timm.models.vision_transformer_sam import Block as WindowBlock
from torch import Tensor, nn

from comad.checkpoint import EncoderCheckpoint, read_arch, read_encoder, resample_pos_embed
from comad.io import CheckpointError

__all__ = ["ComadMAEViT", "to_student_key", "POS_RESAMPLES"]

#: How the student's position embedding is resampled to another grid: ``bicubic`` (plain, as mmseg's
#: MAE / BEiT and ViTDet do) or ``bicubic-antialias`` (timm's ``resample_abs_pos_embed`` default).
POS_RESAMPLES = ("bicubic", "bicubic-antialias")


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

    The module builds from its architecture alone; a student file only initialises training:
    ``init_cfg=dict(type='Pretrained', checkpoint=PATH)`` (what ``transfer.run`` sets; ``student=PATH``
    is short for it) is loaded by :meth:`init_weights`, which mmengine's Runner calls before it
    resumes or loads a trained checkpoint. ``mmseg.apis.init_model`` / ``mmdet.apis.init_detector``
    clear ``init_cfg`` and never call it, so a trained model loads where the student file does not
    exist (the release configs of :mod:`transfer.mm_release` hold the architecture only).

    Args:
        student: short for ``init_cfg=dict(type='Pretrained', checkpoint=student)``: a student
            file, loaded strictly by :meth:`init_weights`: ``student.safetensors`` / ``student.pth``
            from :func:`comad.export.export_student`, or any ViT file :mod:`comad.checkpoint` reads
            (a timm or DeiT state dict: arch from the shapes, heads from ``num_heads`` or width / 64).
            With neither, the weights are a random (timm) initialisation.
        img_size: training crop (H, W); the student's position embedding is resampled to this
            grid once at load (bicubic, timm ``resample_abs_pos_embed``) and to any other input
            grid on the fly in ``forward``.
        patch_size, embed_dim, depth, num_heads: the architecture; ``None`` reads it from the
            student file (its ``arch`` metadata, else its shapes; the only read of that file before
            :meth:`init_weights`); a value that differs from the file's is an error at load (naming
            the file, the differing fields and the missing / unexpected / mis-shaped keys).
            ``num_heads`` is the head count of a student whose file does not state one.
        mlp_ratio: MLP width / embed_dim (timm default 4; the MLP weight shapes check it).
        out_indices: blocks whose outputs are returned (negative counts from the end). The last
            of them must be the last block (otherwise later blocks would be dead weights).
        drop_path_rate: stochastic depth, linear from 0 to this value over the blocks.
        final_norm: apply the student's final LayerNorm to the last block's output (False: the
            file's ``norm.*`` is dropped at load, and listed, as mmseg's MAE and ViTDet do;
            ``'all'``: to every output, as DINOv2's ``get_intermediate_layers`` for its linear probes).
        frozen: the backbone is a fixed feature extractor (DINOv2's frozen probes): no parameter
            needs a gradient, it stays in eval mode, and :meth:`assert_unchanged` checks after
            training that its weights are still the student's.
        pos_resample: one of :data:`POS_RESAMPLES` (at load and for other input grids).
        use_cls_token: keep the student's CLS token in the sequence (False, as ViTDet: the file's
            ``cls_token`` and the CLS slot of its ``pos_embed`` are dropped at load, and listed).
        window_size, window_block_indexes: ViTDet's window attention: the blocks listed attend
            within ``window_size`` x ``window_size`` windows of the token grid (padded to a
            multiple), the others globally (needs ``use_cls_token=False``).
        use_rel_pos: ViTDet's decomposed relative position terms in every block, zero-initialised
            as ViTDet adds them to MAE weights (not in a student file: listed as added at load).
        with_cp: activation checkpointing of the blocks while training.
        init_cfg: mmengine's; ``type='Pretrained'`` names the student file (``checkpoint``).
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
        final_norm: bool | str = True,
        frozen: bool = False,
        pos_resample: str = "bicubic-antialias",
        use_cls_token: bool = True,
        window_size: int = 0,
        window_block_indexes: Sequence[int] = (),
        use_rel_pos: bool = False,
        with_cp: bool = False,
        init_cfg: dict | None = None,
    ) -> None:
        if student is not None:
            if init_cfg is not None:
                raise ValueError(f"ComadMAEViT: give the student as student={str(student)!r} or as init_cfg "
                                 f"{init_cfg}, not both")
            init_cfg = dict(type="Pretrained", checkpoint=str(student))
        super().__init__(init_cfg=init_cfg)
        self._num_heads_arg = num_heads
        given = dict(patch_size=patch_size, embed_dim=embed_dim, depth=depth, num_heads=num_heads)
        arch = self._arch(given)
        self.patch_size, self.embed_dim = arch["patch_size"], arch["embed_dim"]
        self.depth, self.num_heads = arch["depth"], arch["num_heads"]
        self.img_size = _pair(img_size)
        self.out_indices = self._check_out_indices(out_indices)
        if final_norm not in (True, False, "all"):
            raise ValueError(f"ComadMAEViT: final_norm={final_norm!r}; expected True, False or 'all'")
        self.final_norm, self.frozen = final_norm, bool(frozen)
        self.with_cp = with_cp
        self.drop_path_rate = drop_path_rate
        self._set_attention(pos_resample, use_cls_token, window_size, window_block_indexes, use_rel_pos)

        self.patch_embed = PatchEmbed(img_size=self.img_size, patch_size=self.patch_size, in_chans=3,
                                      embed_dim=self.embed_dim, strict_img_size=False, dynamic_img_pad=True)
        grid = self.grid_size(*self.img_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dim)) if use_cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, self.prefix + grid[0] * grid[1], self.embed_dim))
        dpr = torch.linspace(0, drop_path_rate, self.depth).tolist()
        self.layers = nn.ModuleList(self._block(i, dpr[i], mlp_ratio, grid) for i in range(self.depth))
        # timm VisionTransformer's final norm; without final_norm none (no parameter left unused)
        self.norm = nn.LayerNorm(self.embed_dim, eps=1e-6) if final_norm else None
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for child in self.children():  # timm's init; not on self, whose init_weights loads the student
            child.apply(init_weights_vit_timm)
        self.load_report: dict[str, Any] = {"student": None, "missing_keys": None, "unexpected_keys": None,
                                            "pos_embed": "random init (no student)"}
        if self.frozen:  # before any DDP wrapper sees the parameters
            self.requires_grad_(False)

    def _check_out_indices(self, out_indices: Sequence[int]) -> tuple[int, ...]:
        """``out_indices`` as block numbers (negative ones from the end): increasing, ending at the last block."""
        got = tuple(i + self.depth if i < 0 else int(i) for i in out_indices)
        if not got or any(not 0 <= i < self.depth for i in got):
            raise ValueError(f"ComadMAEViT: out_indices {tuple(out_indices)} out of range for depth {self.depth}")
        if list(got) != sorted(set(got)) or got[-1] != self.depth - 1:
            raise ValueError(
                f"ComadMAEViT: out_indices {tuple(out_indices)} must be increasing and end at the last block "
                f"({self.depth - 1}); blocks after the last output would get no gradient"
            )
        return got

    def _set_attention(self, pos_resample: str, use_cls_token: bool, window_size: int,
                       window_block_indexes: Sequence[int], use_rel_pos: bool) -> None:
        if pos_resample not in POS_RESAMPLES:
            raise ValueError(f"ComadMAEViT: pos_resample={pos_resample!r}; expected one of {POS_RESAMPLES}")
        blocks = tuple(int(i) for i in window_block_indexes)
        if blocks and window_size <= 0:
            raise ValueError(f"ComadMAEViT: window_block_indexes {blocks} need window_size > 0")
        if any(not 0 <= i < self.depth for i in blocks):
            raise ValueError(f"ComadMAEViT: window_block_indexes {blocks} out of range for depth {self.depth}")
        if (blocks or use_rel_pos) and use_cls_token:
            raise ValueError("ComadMAEViT: window attention and relative positions work on the token grid alone; "
                             "set use_cls_token=False (as ViTDet)")
        self.pos_resample, self.prefix = pos_resample, int(use_cls_token)
        self.window_size, self.window_block_indexes, self.use_rel_pos = int(window_size), blocks, bool(use_rel_pos)

    def _block(self, i: int, drop_path: float, mlp_ratio: float, grid: tuple[int, int]) -> nn.Module:
        """Block ``i``: timm's ViT block, or with windows / relative positions timm's ViTDet-style
        block (the same parameter names, plus ``attn.rel_pos_h`` / ``rel_pos_w``), on (B, H, W, C)."""
        norm = partial(nn.LayerNorm, eps=1e-6)
        if not (self.window_block_indexes or self.use_rel_pos):
            return Block(self.embed_dim, self.num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path,
                         norm_layer=norm)
        window = self.window_size if i in self.window_block_indexes else 0
        return WindowBlock(self.embed_dim, self.num_heads, mlp_ratio=mlp_ratio, qkv_bias=True, drop_path=drop_path,
                           norm_layer=norm, use_rel_pos=self.use_rel_pos, window_size=window,
                           input_size=(window, window) if window else grid)

    @property
    def windowed(self) -> bool:
        return bool(self.window_block_indexes or self.use_rel_pos)

    # ----------------------------------------------------------------------------------------
    @property
    def student_file(self) -> str | None:
        """The student file of ``init_cfg`` (``type='Pretrained'``), or None."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        files = [c.get("checkpoint") for c in cfgs if c.get("type") == "Pretrained"]
        return str(files[-1]) if files else None

    def _arch(self, given: dict[str, int | None]) -> dict[str, int]:
        """The given fields, the missing ones read from the student file (only its architecture)."""
        missing = [k for k, v in given.items() if v is None]
        if not missing:
            return {k: int(v) for k, v in given.items()}
        if self.student_file is None:
            raise ValueError(f"ComadMAEViT: {', '.join(repr(k) for k in missing)} not given and there is no "
                             f"student (init_cfg=dict(type='Pretrained', checkpoint=...)) to read it from")
        found = read_arch(self.student_file, num_heads=given["num_heads"])  # raises: heads unknown
        return {k: int(v if v is not None else found[k]) for k, v in given.items()}

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
        added = sorted(k for k in own if ".rel_pos_" in k)  # ViTDet's relative positions: not in a student
        by_student_key = {to_student_key(k): k for k in own if k not in added}
        file_keys = set(weights.state_dict)
        unused = (["cls_token"] if self.cls_token is None else []) + ([] if self.final_norm else ["norm.weight", "norm.bias"])
        dropped = sorted(k for k in unused if k in file_keys)  # the file's tensors this recipe does not use
        missing = sorted(set(by_student_key) - file_keys)
        unexpected = sorted(file_keys - set(by_student_key) - set(dropped))
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
        state["pos_embed"] = self._resample(pos.float(), grid, (src_grid, src_grid), prefix=1)[:, 1 - self.prefix:]
        state.update({k: own[k] for k in added})
        result = self.load_state_dict(state, strict=True)
        how = "plain bicubic" if self.pos_resample == "bicubic" else "bicubic, antialiased (timm's default)"
        self.load_report = {
            "student": str(weights.source),
            "expected_keys": len(by_student_key),
            "missing_keys": list(result.missing_keys),
            "unexpected_keys": list(result.unexpected_keys),
            "dropped_keys": dropped,
            "added_keys": added,
            "pos_embed": (f"{src_grid}x{src_grid} -> {grid[0]}x{grid[1]} at load, to each input grid in forward "
                          f"({how}; CLS slot {'kept' if self.prefix else 'dropped'})"),
        }
        self._is_init = True
        if self.frozen:
            self._frozen_state = {k: v.detach().clone() for k, v in self.state_dict().items()}
        print_log(f"ComadMAEViT: loaded {weights.source} strictly ({len(by_student_key)} keys, missing [], "
                  f"unexpected []); pos_embed {self.load_report['pos_embed']}", logger="current")
        return self.load_report

    def init_weights(self) -> None:
        """Load the student of ``init_cfg`` strictly (:meth:`load_student`); without one keep timm's init."""
        if self.student_file is not None:
            self.load_student(read_encoder(self.student_file, num_heads=self._num_heads_arg))
        self._is_init = True

    def train(self, mode: bool = True) -> "ComadMAEViT":
        """A frozen backbone stays in eval mode (a feature extractor: no dropout, no drop path)."""
        return super().train(mode and not self.frozen)

    def assert_unchanged(self) -> None:
        """Raise when a frozen backbone's weights differ from those it loaded (names the tensors)."""
        ref = getattr(self, "_frozen_state", None)
        if not self.frozen or ref is None:
            raise RuntimeError("ComadMAEViT.assert_unchanged: not a frozen backbone with a loaded student")
        changed = [k for k, v in self.state_dict().items() if not torch.equal(v.detach().cpu(), ref[k].cpu())]
        if changed:
            raise RuntimeError(f"the frozen backbone changed during training: {_summarise(changed)}; a frozen probe's "
                               "number would not be the student's")

    # ----------------------------------------------------------------------------------------
    def _resample(self, pos: Tensor, grid: tuple[int, int], old: tuple[int, int], prefix: int) -> Tensor:
        return resample_pos_embed(pos, grid, old, num_prefix_tokens=prefix,
                                  antialias=self.pos_resample == "bicubic-antialias")

    def _pos_embed_for(self, grid: tuple[int, int]) -> Tensor:
        own = self.grid_size(*self.img_size)
        if grid == own:
            return self.pos_embed
        return self._resample(self.pos_embed, grid, own, self.prefix)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        """(B, 3, H, W) -> one (B, embed_dim, ceil(H/p), ceil(W/p)) map per ``out_indices`` entry."""
        b, _, h, w = x.shape
        grid = self.grid_size(h, w)
        tokens = self.patch_embed(x)
        if self.cls_token is not None:
            tokens = torch.cat([self.cls_token.expand(b, -1, -1), tokens], dim=1)
        tokens = tokens + self._pos_embed_for(grid)
        if self.windowed:  # ViTDet's blocks work on the (B, H, W, C) grid
            tokens = tokens.reshape(b, grid[0], grid[1], self.embed_dim)
        outs = []
        wanted = set(self.out_indices)
        for i, blk in enumerate(self.layers):
            if self.with_cp and self.training and tokens.requires_grad:
                tokens = cp.checkpoint(blk, tokens, use_reentrant=False)
            else:
                tokens = blk(tokens)
            if i in wanted:
                last = i == self.depth - 1
                y = self.norm(tokens) if self.final_norm == "all" or (self.final_norm and last) else tokens
                y = y.reshape(b, -1, self.embed_dim)[:, self.prefix:]
                outs.append(y.transpose(1, 2).reshape(b, self.embed_dim, grid[0], grid[1]))
        return tuple(outs)
