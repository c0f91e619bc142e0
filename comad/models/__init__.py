"""Model pieces over timm: the token-dropping ViT forward and the decoder (the student is
:func:`comad.checkpoint.build_vit`)."""
from .vit import forward_kept_tokens, gather_tokens, scatter_tokens

__all__ = ["forward_kept_tokens", "gather_tokens", "scatter_tokens"]
