"""The strict load every family uses: the exact missing / unexpected key lists, or an error naming them."""
from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from ..io import CheckpointError
from .vit import key_hint

__all__ = ["load_strict"]


def load_strict(model: nn.Module, sd: Mapping[str, Tensor], source: str = "<file>",
                allow_missing: tuple[str, ...] = (), allow_unexpected: tuple[str, ...] = (),
                what: str = "ViT encoder") -> dict[str, list[str]]:
    """Load ``sd`` into ``model``; every key must fit, except missing keys under ``allow_missing``
    (a fresh classifier) and unexpected ones under ``allow_unexpected`` (a norm the pooling skips).
    ``what`` names the model in the messages (``ViT encoder``, ``MobileNetV2``).

    Returns:
        ``{'missing_keys': [...], 'unexpected_keys': [...]}`` (sorted; empty for an exact load).

    Raises:
        CheckpointError: naming the file, the shapes that do not fit, or the exact missing /
            unexpected key lists.
    """
    try:
        result = model.load_state_dict(dict(sd), strict=False)
    except RuntimeError as e:
        noun = "the inferred ViT" if what == "ViT encoder" else what
        raise CheckpointError(f"checkpoint {source}: tensor shapes do not fit {noun}: {e}") from None
    missing, unexpected = sorted(result.missing_keys), sorted(result.unexpected_keys)
    bad_missing = [k for k in missing if not k.startswith(allow_missing)]
    bad_unexpected = [k for k in unexpected if not k.startswith(allow_unexpected)]
    if bad_missing or bad_unexpected:
        raise CheckpointError(
            f"checkpoint {source}: not an exact {what}; missing keys {bad_missing}, "
            f"unexpected keys {bad_unexpected}{key_hint(sd) if what == 'ViT encoder' else ''}"
        )
    return {"missing_keys": missing, "unexpected_keys": unexpected}
