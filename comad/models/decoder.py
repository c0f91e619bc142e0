"""MAE-style decoder: reconstruct the full patch map from the student's visible tokens."""
from __future__ import annotations

import torch
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import Tensor, nn

from .vit import scatter_tokens

__all__ = ["MaskedDecoder"]


class MaskedDecoder(nn.Module):
    """Learned mask token at every dropped position, own position embedding, ViT blocks, linear.

    Args:
        in_dim: student width.
        num_positions: patches per image (N).
        embed_dim: decoder width (docs/method.md default: 192).
        depth: decoder blocks (2).
        num_heads: heads (3).
        out_dim: width of the reconstructed map (the adapters' output width).
    """

    def __init__(self, in_dim: int, num_positions: int, embed_dim: int = 192, depth: int = 2, num_heads: int = 3,
                 out_dim: int | None = None, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.num_positions = num_positions
        self.embed = nn.Linear(in_dim, embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.pred = nn.Linear(embed_dim, out_dim or in_dim)
        trunc_normal_(self.mask_token, std=0.02)
        trunc_normal_(self.pos_embed, std=0.02)

    def forward(self, tokens: Tensor, keep_idx: Tensor) -> Tensor:
        """``tokens`` (B, K, in_dim) at positions ``keep_idx`` (B, K) -> (B, N, out_dim)."""
        x = self.embed(tokens)
        b, k, d = x.shape
        visible = scatter_tokens(torch.ones_like(x[..., :1]), keep_idx, self.num_positions)
        full = scatter_tokens(x, keep_idx, self.num_positions)
        full = full + (1 - visible) * self.mask_token.to(x.dtype)
        full = full + self.pos_embed
        for blk in self.blocks:
            full = blk(full)
        return self.pred(self.norm(full))
