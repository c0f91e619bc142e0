"""An mmengine file backend whose writes are atomic (temp file + rename)."""
from __future__ import annotations

from pathlib import Path

from mmengine.fileio.backends import LocalBackend

from ..io import atomic_open


class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose ``put`` / ``put_text`` go through :func:`comad.io.atomic_open`.

    Use it for checkpoints: ``default_hooks.checkpoint.backend_args=dict(backend='atomic_local')``.
    A kill or a full disk during a save leaves the previous checkpoints intact.
    """

    def put(self, obj: bytes, filepath: str | Path) -> None:
        with atomic_open(filepath, "wb") as f:
            f.write(obj)

    def put_text(self, obj: str, filepath: str | Path, encoding: str = "utf-8") -> None:
        with atomic_open(filepath, "w") as f:
            f.write(obj)
