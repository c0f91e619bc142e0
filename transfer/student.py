"""Read an exported CoMAD student (``comad.export.export_student``) for transfer.

A student is ``student.safetensors`` (metadata ``format=comad-student`` and ``arch``) or
``student.pth`` (``{'state_dict': ..., 'meta': {'arch': ...}}``); both hold the timm key names
of a ViT encoder without head and a position embedding with one CLS slot and no other extra
tokens. :func:`read_student` returns the tensors and the architecture; any other layout is a
:class:`comad.io.CheckpointError` naming the file.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from comad.io import CheckpointError, load_state_dict_file

__all__ = ["ARCH_KEYS", "StudentWeights", "read_student", "read_student_arch"]

#: The architecture fields every exported student carries.
ARCH_KEYS = ("img_size", "patch_size", "embed_dim", "depth", "num_heads")


@dataclass
class StudentWeights:
    """Tensors (timm names) and architecture of one exported student."""

    path: Path
    state_dict: dict[str, torch.Tensor]
    arch: dict[str, int]
    meta: dict[str, Any] = field(default_factory=dict)


def _safetensors_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def _check_arch(path: Path, arch: Any) -> dict[str, int]:
    if not isinstance(arch, dict) or any(k not in arch for k in ARCH_KEYS):
        raise CheckpointError(
            f"student {path}: its metadata has no complete 'arch' (expected keys {', '.join(ARCH_KEYS)}, "
            f"found {arch!r}); export students with comad.export.export_student"
        )
    return {k: int(arch[k]) for k in ARCH_KEYS}


def read_student_arch(path: str | Path) -> dict[str, int]:
    """The ``arch`` of a student file without loading its tensors where the format allows."""
    path = Path(path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"student {path}: no such file")
        try:
            meta = _safetensors_metadata(path)
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise CheckpointError(f"student {path}: not a readable safetensors file: {e}") from None
        try:
            arch = json.loads(meta.get("arch", "null"))
        except json.JSONDecodeError:
            arch = meta.get("arch")
        return _check_arch(path, arch)
    return read_student(path).arch


def read_student(path: str | Path) -> StudentWeights:
    """Load a student file (``.safetensors`` or a torch ``.pth``) safely.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: unreadable, no ``arch`` metadata, or a ``pos_embed`` that does not
            hold exactly one CLS slot plus the ``(img_size / patch_size)²`` grid of ``arch``.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        state = load_state_dict_file(path)
        meta_raw = _safetensors_metadata(path)
        arch = read_student_arch(path)
        try:
            meta = json.loads(meta_raw.get("meta", "{}"))
        except json.JSONDecodeError:
            meta = {}
    else:
        obj = load_state_dict_file(path)
        if not isinstance(obj, dict) or not isinstance(obj.get("state_dict"), dict):
            raise CheckpointError(
                f"student {path}: expected a dict with 'state_dict' and 'meta' (comad.export.export_student's "
                f"student.pth); found {type(obj).__name__} with keys {sorted(obj)[:8] if isinstance(obj, dict) else '-'}"
            )
        state = obj["state_dict"]
        meta = dict(obj.get("meta") or {})
        arch = _check_arch(path, meta.get("arch"))
    pos = state.get("pos_embed")
    grid = arch["img_size"] // arch["patch_size"]
    if pos is not None and (pos.ndim != 3 or pos.shape[1] != 1 + grid * grid):
        extra = pos.shape[1] - grid * grid if pos.ndim == 3 else "?"
        raise CheckpointError(
            f"student {path}: pos_embed has shape {tuple(pos.shape)}; a student for img_size={arch['img_size']}, "
            f"patch_size={arch['patch_size']} carries 1 CLS slot + {grid}x{grid} positions "
            f"({1 + grid * grid} tokens), found {extra} non-grid tokens"
            + ("" if pos.ndim != 3 or math.isqrt(pos.shape[1]) ** 2 != pos.shape[1] else " (no CLS slot?)")
        )
    return StudentWeights(path=path, state_dict=dict(state), arch=arch, meta=meta)
