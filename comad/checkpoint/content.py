"""A checkpoint's identity by its content, not by its file's bytes.

Two files that hold the same tensors and the same metadata are the same student, whatever order
the writer put them in: safetensors writes the ``__metadata__`` keys in a different order in each
process (``arch``/``format``/``meta`` in one file, ``format``/``meta``/``arch`` in the next), so a
sha256 of the file's bytes told two identical students apart. :func:`content_sha256` hashes

- every tensor, in sorted name order: its name, dtype, shape and raw bytes;
- everything else the file holds (a ``.pth``'s ``meta``, a safetensors header's metadata) as
  sorted-key JSON, with metadata strings that are JSON themselves (an exported student's
  ``arch`` / ``meta``) parsed first, so their key order does not count either.

The transfer tasks' work-dir guard, the ImageNet resume keys and the feature caches identify a
student by it.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping

import torch

from .read import file_metadata, read_checkpoint

__all__ = ["content_sha256", "canonical_metadata"]


def _canonical(value: Any) -> Any:
    """Plain data with JSON strings parsed (so their key order does not count)."""
    if isinstance(value, str) and value[:1] in ("{", "["):
        try:
            return _canonical(json.loads(value))
        except json.JSONDecodeError:
            return value
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    return value


def canonical_metadata(metadata: Mapping[str, Any]) -> str:
    """Sorted-key JSON of ``metadata`` (JSON-valued strings parsed first)."""
    return json.dumps(_canonical(dict(metadata)), sort_keys=True, separators=(",", ":"), default=str)


def _tensor_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous().reshape(-1)
    return t.view(torch.uint8).numpy().tobytes() if t.numel() else b""


def _split(obj: Any, prefix: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move every tensor of ``obj`` into ``tensors`` (keyed by its path); return the rest as plain data."""
    if isinstance(obj, torch.Tensor):
        tensors[prefix] = obj
        return {"__tensor__": prefix}
    if isinstance(obj, Mapping):
        return {str(k): _split(v, f"{prefix}.{k}" if prefix else str(k), tensors) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_split(v, f"{prefix}.{i}", tensors) for i, v in enumerate(obj)]
    return obj


def content_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a checkpoint's tensors (sorted names, dtypes, shapes, bytes) and canonical metadata.

    Raises:
        FileNotFoundError / CheckpointError: as :func:`~comad.checkpoint.read.read_checkpoint`.
    """
    tensors: dict[str, torch.Tensor] = {}
    rest = _split(read_checkpoint(path), "", tensors)
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(_tensor_bytes(t))
    h.update(canonical_metadata({"content": rest, "header": file_metadata(path)}).encode())
    return h.hexdigest()
