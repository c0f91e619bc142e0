"""Checkpoint layouts of the teachers and their conversion to timm key names.

Each official layout is one row of :data:`LAYOUTS` (in the spirit of timm's
``checkpoint_filter_fn``): which top-level keys identify it, where each encoder's weights sit
(container + key prefix), which other key prefixes the file may legitimately hold (heads,
predictors, the other encoder), and which encoder-level keys are dropped (projection heads,
MIM mask tokens, MAE decoder). :func:`detect_format` picks the first row whose rule matches the
keys; :func:`convert_state_dict` applies the row. Anything in a container that no rule
accounts for is an error, never silently dropped.

Layouts (``fmt`` names):

- ``mae``: ``mae_pretrain_vit_base.pth`` = ``{'model': encoder}`` with timm names. The MoCo v3
  ``convert_to_deit.py`` output and DeiT checkpoints share this exact layout, so ``auto``
  reports them as ``mae``; pass ``fmt='mocov3_deit'`` to record the other name.
- ``mocov3``: ``vit-b-300ep.pth.tar`` = ``{'epoch', 'arch', 'state_dict', 'optimizer'}`` with
  ``module.base_encoder.*`` (+ BN-MLP ``head.*``), ``module.momentum_encoder.*``,
  ``module.predictor.*``. Encoders: ``base`` (default), ``momentum``.
- ``mocov3_deit``: ``{'model': encoder}`` (``convert_to_deit.py`` output, no head).
- ``ibot``: full ``checkpoint.pth`` = ``{'student', 'teacher', 'optimizer', 'epoch', 'args',
  ...}``; teacher keys ``backbone.*`` + ``head.*``, student keys ``module.backbone.*`` (with
  ``masked_embed``) + ``module.head.*``. Encoders: ``teacher`` (default), ``student``. DINO's
  full ``checkpoint.pth`` has the same layout.
- ``ibot_teacher``: ``checkpoint_teacher.pth`` = ``{'state_dict': backbone}``.
- ``timm``: a plain timm ViT state dict (DINO, DeiT, any timm ViT, a converted teacher, an
  exported CoMAD student); a classifier ``head.*`` is dropped.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import Tensor

from ..io import CheckpointError

__all__ = [
    "Layout",
    "LAYOUTS",
    "FORMATS",
    "RENAMES",
    "detect_format",
    "convert_state_dict",
    "resolve_encoder",
]


@dataclass(frozen=True)
class Layout:
    """One checkpoint layout.

    Attributes:
        name: the format name.
        description: what file it is (used in error messages).
        top_keys: top-level keys that must all be present (``()``: the file is the state dict).
        encoders: encoder option -> (container key or ``None`` for the top level, key prefix);
            the first entry is the default.
        known_prefixes: prefixes of other keys a container may hold (heads, predictor, the
            other encoder); anything else there is reported as unexpected.
        drop: regexes (on the prefix-stripped keys) of encoder-level keys that are not part of
            a ViT encoder (projection heads, MIM mask token, MAE decoder) and are dropped.
        detectable: ``False`` for a layout that ``auto`` cannot tell apart from an earlier row.
        aliases: other spellings of the encoder options.
    """

    name: str
    description: str
    top_keys: tuple[str, ...]
    encoders: Mapping[str, tuple[str | None, str]]
    known_prefixes: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    detectable: bool = True
    aliases: Mapping[str, str] = field(default_factory=dict)


_MAE_DROP = (r"^mask_token$", r"^decoder_", r"^head\.")

LAYOUTS: tuple[Layout, ...] = (
    Layout(
        name="mocov3",
        description="MoCo v3 checkpoint {'epoch', 'arch', 'state_dict': module.base_encoder.* ...}",
        top_keys=("state_dict",),
        encoders={"base": ("state_dict", "module.base_encoder."),
                  "momentum": ("state_dict", "module.momentum_encoder.")},
        known_prefixes=("module.base_encoder.", "module.momentum_encoder.", "module.predictor."),
        drop=(r"^head\.",),
        aliases={"base_encoder": "base", "momentum_encoder": "momentum"},
    ),
    Layout(
        name="ibot",
        description="iBOT checkpoint {'student': module.backbone.*, 'teacher': backbone.*, ...}",
        top_keys=("student", "teacher"),
        encoders={"teacher": ("teacher", "backbone."), "student": ("student", "module.backbone.")},
        known_prefixes=("backbone.", "head.", "module.backbone.", "module.head."),
        drop=(r"^masked_embed$", r"^head\."),
    ),
    Layout(
        name="ibot_teacher",
        description="iBOT checkpoint_teacher.pth {'state_dict': backbone}",
        top_keys=("state_dict",),
        encoders={"teacher": ("state_dict", "")},
        drop=(r"^masked_embed$", r"^head\."),
    ),
    Layout(
        name="mae",
        description="MAE / DeiT-style checkpoint {'model': encoder}",
        top_keys=("model",),
        encoders={"encoder": ("model", "")},
        drop=_MAE_DROP,
    ),
    Layout(
        name="mocov3_deit",
        description="MoCo v3 convert_to_deit.py output {'model': encoder}",
        top_keys=("model",),
        encoders={"encoder": ("model", "")},
        drop=(r"^head\.",),
        detectable=False,
    ),
    Layout(
        name="timm",
        description="plain timm ViT state dict",
        top_keys=(),
        encoders={"encoder": (None, "")},
        drop=(r"^head\.",),
    ),
)

FORMATS: tuple[str, ...] = tuple(lay.name for lay in LAYOUTS)
_BY_NAME = {lay.name: lay for lay in LAYOUTS}

# Key renames applied after the prefix is stripped (regex, replacement): older layer-scale
# names (BEiT/iBOT ``gamma_1``) to timm's, as timm's own checkpoint filters do.
RENAMES: tuple[tuple[str, str], ...] = (
    (r"^blocks\.(\d+)\.gamma_1$", r"blocks.\1.ls1.gamma"),
    (r"^blocks\.(\d+)\.gamma_2$", r"blocks.\1.ls2.gamma"),
)

_CONV_STEM = re.compile(r"^patch_embed\.proj\.\d+\.")
_MARKER = "patch_embed."  # every ViT encoder layout holds patch-embedding keys


def _short_keys(keys: Any, limit: int = 12) -> str:
    keys = [repr(k) for k in keys]
    more = f", ... ({len(keys)} keys)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + more + "]"


def _container(raw: Any, key: str | None) -> Any:
    return raw if key is None else raw.get(key) if isinstance(raw, Mapping) else None


def _matches(layout: Layout, raw: Any) -> bool:
    """Whether ``raw`` has the layout's top-level keys and its default encoder's keys."""
    if not isinstance(raw, Mapping) or not all(k in raw for k in layout.top_keys):
        return False
    where, prefix = next(iter(layout.encoders.values()))
    box = _container(raw, where)
    return isinstance(box, Mapping) and any(isinstance(k, str) and k.startswith(prefix + _MARKER) for k in box)


def _layout_summary(raw: Any) -> str:
    if not isinstance(raw, Mapping):
        return f"the file holds a {type(raw).__name__}, not a dict"
    parts = [f"top-level keys {_short_keys(raw.keys())}"]
    for k, v in raw.items():
        if isinstance(v, Mapping) and any(isinstance(x, Tensor) for x in v.values()):
            parts.append(f"{k!r} holds {_short_keys(v.keys())}")
    return "; ".join(parts)


def detect_format(raw: Any, source: str = "<file>") -> str:
    """Name the layout of a loaded checkpoint from its keys (first matching row of LAYOUTS).

    Raises:
        CheckpointError: no layout matches; the message lists the keys seen and the layouts known.
    """
    for layout in LAYOUTS:
        if layout.detectable and _matches(layout, raw):
            return layout.name
    known = "; ".join(f"{lay.name}: {lay.description}" for lay in LAYOUTS)
    raise CheckpointError(
        f"checkpoint {source}: unknown layout, no ViT encoder found ({_layout_summary(raw)}). "
        f"Known layouts: {known}."
    )


def resolve_encoder(fmt: str, encoder: str | None, source: str = "<file>") -> str:
    """The encoder option for ``fmt`` (``None`` -> the layout's default); error if unknown."""
    layout = _BY_NAME[fmt]
    if encoder is None:
        return next(iter(layout.encoders))
    name = layout.aliases.get(encoder, encoder)
    if name not in layout.encoders:
        raise CheckpointError(
            f"checkpoint {source}: encoder {encoder!r} is not available in the {fmt} layout; "
            f"choose one of {list(layout.encoders)}"
        )
    return name


def _rename(key: str) -> str:
    for pattern, repl in RENAMES:
        key = re.sub(pattern, repl, key)
    return key


def convert_state_dict(
    raw: Any, fmt: str = "auto", encoder: str | None = None, source: str = "<file>"
) -> tuple[str, dict[str, Tensor]]:
    """Extract one ViT encoder from a loaded checkpoint, with timm key names.

    Args:
        raw: what ``torch.load`` / safetensors returned.
        fmt: a name of :data:`FORMATS` or ``'auto'`` (detect from the keys).
        encoder: which encoder of the layout (MoCo v3: ``base`` | ``momentum``; iBOT:
            ``teacher`` | ``student``); ``None`` for the default.
        source: the file name, for messages.

    Returns:
        ``(fmt, state_dict)``: the format used and the encoder's timm-named tensors.

    Raises:
        CheckpointError: unknown layout or format name, a forced format that does not fit the
            file, keys that no rule accounts for, non-tensor values, or an unsupported MoCo v3
            ``vit_conv_*`` ConvStem encoder.
    """
    if fmt == "auto":
        fmt = detect_format(raw, source)
    if fmt not in _BY_NAME:
        raise CheckpointError(f"checkpoint {source}: unknown format {fmt!r}; choose auto or one of {list(FORMATS)}")
    layout = _BY_NAME[fmt]
    enc = resolve_encoder(fmt, encoder, source)
    if not isinstance(raw, Mapping) or not all(k in raw for k in layout.top_keys):
        raise CheckpointError(
            f"checkpoint {source}: does not have the {fmt} layout ({layout.description}): "
            f"{_layout_summary(raw)}"
        )
    where, prefix = layout.encoders[enc]
    box = _container(raw, where)
    if not isinstance(box, Mapping):
        raise CheckpointError(f"checkpoint {source}: {where!r} is not a state dict in the {fmt} layout")
    arch_name = raw.get("arch") if isinstance(raw, Mapping) else None
    unaccounted = [k for k in box if not (isinstance(k, str) and (k.startswith(prefix) or k.startswith(layout.known_prefixes)))]
    if unaccounted:
        raise CheckpointError(
            f"checkpoint {source}: keys that the {fmt} layout does not account for in "
            f"{where or 'the top level'!r}: {_short_keys(unaccounted)}"
        )
    drops = [re.compile(p) for p in layout.drop]
    out: dict[str, Tensor] = {}
    for key, value in box.items():
        if not key.startswith(prefix):
            continue  # other encoder / head / predictor: accounted for by known_prefixes
        name = key[len(prefix):]
        if any(d.search(name) for d in drops):
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(f"checkpoint {source}: key {key!r} holds a {type(value).__name__}, not a tensor")
        out[_rename(name)] = value
    if not any(k.startswith(_MARKER) for k in out):
        raise CheckpointError(
            f"checkpoint {source}: no ViT encoder under prefix {prefix!r} of {where or 'the top level'!r} "
            f"for the {fmt} layout ({_layout_summary(raw)})"
        )
    if any(_CONV_STEM.match(k) for k in out) or (isinstance(arch_name, str) and arch_name.startswith("vit_conv")):
        raise CheckpointError(
            f"checkpoint {source}: a MoCo v3 vit_conv_* (ConvStem) encoder"
            f"{f' (arch {arch_name!r})' if isinstance(arch_name, str) else ''} is not supported: its "
            f"patch embedding is a stack of convolutions ({_short_keys(sorted(k for k in out if k.startswith('patch_embed.')), 6)}), "
            f"not the single 16x16 projection of a ViT-B/16 teacher"
        )
    return fmt, out
