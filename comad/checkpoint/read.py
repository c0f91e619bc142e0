"""Safe reading of a checkpoint file (safetensors, or torch with ``weights_only=True``) and of the
metadata it keeps (a safetensors header; a layout's own ``meta`` / ``arch``)."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any, Mapping

from ..io import CheckpointError, load_state_dict_file

__all__ = ["EXPECTED_FILES", "read_checkpoint", "file_metadata", "is_safetensors", "layout_metadata"]

#: What the loader accepts, for the messages about a file it cannot use.
EXPECTED_FILES = ("a ViT checkpoint: a CoMAD student.safetensors / student.pth (comad.export), a timm or DeiT "
                  "state dict, or an MAE / MoCo v3 / iBOT release; or a CNN teacher: torchvision MobileNetV2, "
                  "EfficientNet-Lite0 in EfficientNet-PyTorch naming")


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(64)


def is_safetensors(path: str | os.PathLike) -> bool:
    """By its name, or by its header (8-byte length, then JSON) whatever it is called."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return True
    head = _head(path) if path.is_file() else b""
    return len(head) > 9 and head[8:10] == b'{"'


def read_checkpoint(path: str | os.PathLike) -> Any:
    """Load a checkpoint file safely: safetensors, or torch with ``weights_only=True``.

    The first bytes are checked first, so a text file, an HTML error page or a Git LFS pointer
    is reported as "not a checkpoint" rather than as a refused pickle.

    Raises:
        FileNotFoundError / CheckpointError: naming the file (missing, empty, truncated, not a
            checkpoint, or needing arbitrary unpickling, which is refused).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file (expected {EXPECTED_FILES})")
    head = _head(path)
    safetensors = is_safetensors(path)
    if head and not safetensors and not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        hint = " (a Git LFS pointer: fetch the real file)" if head.startswith(b"version https://git-lfs") else ""
        raise CheckpointError(
            f"checkpoint {path}: not a torch checkpoint{hint}; it starts with {head[:24]!r}, "
            f"neither a zip archive nor a pickle"
        )
    if safetensors and path.suffix != ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file: {e}") from None
    try:
        return load_state_dict_file(path)
    except (IndexError, KeyError, TypeError, AttributeError, UnicodeDecodeError, struct.error) as e:
        # the pickle parser can fail in ways comad.io does not translate
        raise CheckpointError(f"checkpoint {path}: not a readable torch checkpoint ({type(e).__name__}: {e})") from None


def file_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors header (``{}`` for a torch file or none)."""
    if not is_safetensors(path):
        return {}
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: not a readable safetensors file: {e}") from None


def _json(text: str, what: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"checkpoint {source}: metadata {what!r} is not JSON: {e}") from None


def layout_metadata(layout: Any, raw: Any, header: Mapping[str, str], source: str) -> tuple[dict[str, Any], Any]:
    """``(meta, arch)`` of a row of comad.checkpoint.layouts (``Layout``): the file's provenance and the ``arch`` its metadata states (``None`` for a
    layout without metadata). Without metadata, ``meta`` is the safetensors header, or the plain
    top-level values of a torch file (``epoch``, ``arch``, ...)."""
    if layout.metadata == "header":
        meta = _json(header["meta"], "meta", source) if "meta" in header else {}
        return dict(meta), _json(header["arch"], "arch", source) if "arch" in header else None
    if layout.metadata == "meta":
        meta = raw.get("meta")
        if not isinstance(meta, Mapping):
            raise CheckpointError(f"checkpoint {source}: 'meta' holds a {type(meta).__name__}, not a dict")
        return dict(meta), meta.get("arch")
    if header:
        return dict(header), None
    plain = (str, int, float, bool)
    return ({k: v for k, v in raw.items() if isinstance(k, str) and isinstance(v, plain)}
            if isinstance(raw, Mapping) else {}), None
