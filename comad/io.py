"""Safe checkpoint loading and atomic writes.

Every file that comes from outside a run (teachers, students, anything a user passes) is read
with ``torch.load(weights_only=True)`` and an explicit allow-list of the few non-tensor types
that official checkpoints hold. Every file the project writes goes to a temporary file in the
same folder and is renamed over the target, so a kill or a full disk mid-write leaves the
previous file intact.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

__all__ = [
    "CheckpointError",
    "SAFE_GLOBALS",
    "safe_torch_load",
    "atomic_open",
    "atomic_torch_save",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_safetensors",
    "load_state_dict_file",
]

PathLike = str | os.PathLike


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; the message names the file and the problem."""


# Non-tensor types that official checkpoints carry. iBOT and DINO store their training
# arguments as an argparse.Namespace; nothing else is needed for MAE / MoCo v3 / timm files.
SAFE_GLOBALS: tuple[Any, ...] = (argparse.Namespace,)


def safe_torch_load(path: PathLike, extra_globals: Iterable[Any] = (), map_location: str | torch.device = "cpu") -> Any:
    """Load a torch checkpoint with ``weights_only=True`` and an explicit allow-list.

    Args:
        path: the file.
        extra_globals: types allowed in addition to :data:`SAFE_GLOBALS`.
        map_location: passed to ``torch.load``.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: not a torch checkpoint, truncated, or it needs arbitrary unpickling
            (a type outside the allow-list), which is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty")
    allowed = list(SAFE_GLOBALS) + list(extra_globals)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        global_lines = [ln.strip() for ln in msg.splitlines() if "global" in ln.lower() and ("unsupported" in ln.lower() or "not an allowed" in ln.lower())]
        if global_lines:
            raise CheckpointError(
                f"checkpoint {path}: refused, it needs arbitrary unpickling ({global_lines[0]}). Files from "
                f"outside a run are loaded with torch.load(weights_only=True); allowed types: "
                f"{', '.join(t.__module__ + '.' + t.__qualname__ for t in allowed)}. If you trust "
                f"the file, load it yourself with weights_only=False and re-save its state dict (tensors only)."
            ) from None
        raise CheckpointError(f"checkpoint {path}: not a readable torch checkpoint ({e})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, IndexError, KeyError, TypeError) as e:
        raise CheckpointError(
            f"checkpoint {path}: not a readable torch checkpoint (truncated or another format): {e}"
        ) from None


def load_state_dict_file(path: PathLike) -> dict[str, Any]:
    """Load a ``.safetensors`` file or a torch checkpoint (safely) as a dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path}: no such file")
        try:
            return dict(load_file(str(path)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"checkpoint {path}: not a readable safetensors file: {e}") from None
    return safe_torch_load(path)


@contextlib.contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on success fsync it and rename it over ``path``.

    On any error (including a full disk) the temporary file is removed and ``path`` keeps its
    previous content. Raises ``PermissionError`` naming the folder when it is not writable; any
    other ``OSError`` (a full disk, a path component that is a file) keeps its type and errno and
    names the file.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except PermissionError as e:
        raise PermissionError(f"cannot write {path}: the folder {folder} is not writable ({e.strerror})") from None
    except OSError as e:  # e.g. a path component is a file, a read-only file system, a full disk
        raise type(e)(e.errno, f"cannot write {path}: cannot create a file in the folder {folder} ({e.strerror or e})") from None
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None and str(path) not in str(e):
            # a full disk (ENOSPC), a quota, an I/O error: say which file, and that the old one is intact
            raise type(e)(e.errno, f"cannot write {path} ({e.strerror or e}); its previous content, if any, "
                                   "is unchanged") from e
        raise


def atomic_torch_save(obj: Any, path: PathLike) -> None:
    """``torch.save`` through :func:`atomic_open`."""
    with atomic_open(path, "wb") as f:
        torch.save(obj, f)


def atomic_write_text(text: str, path: PathLike) -> None:
    """Write text atomically."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(obj: Any, path: PathLike) -> None:
    """Write JSON (indented, sorted keys) atomically."""
    atomic_write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n", path)


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: PathLike, metadata: dict[str, str] | None = None) -> None:
    """Save a safetensors file atomically (contiguous CPU copies of the tensors)."""
    from safetensors.torch import save

    data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=metadata)
    with atomic_open(path, "wb") as f:
        f.write(data)
