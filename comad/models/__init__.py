"""Model builders over timm: token-dropping ViT forward, student, decoder."""
from .vit import forward_kept_tokens, gather_tokens, scatter_tokens

__all__ = ["forward_kept_tokens", "gather_tokens", "scatter_tokens"]
