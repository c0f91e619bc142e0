"""Generated data folders, made once: one builder, one completeness marker.

Every folder the project generates for demos and tests (the packaged-photo ImageFolder of
:mod:`comad.data.demo`, the ImageNet-layout probe set of :mod:`transfer.imagenet.demo_data`, the
ADE20K / COCO sets of :mod:`transfer.mm_demo_data`) is made by :func:`build_once`:

- the content is written into a temporary folder beside ``root`` and renamed into place, with
  the marker :data:`MARKER` (JSON: ``kind``, ``params``, ``info``) written last, so an
  interrupted build leaves no half set and a folder with the marker is complete;
- a folder whose marker records the same ``kind`` and ``params`` is reused as it is;
- builders of the same folder (DDP ranks, parallel test workers) take a file lock beside it, so
  one builds and the others reuse its result;
- a folder holding files that no builder of ours wrote is refused and left untouched.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from comad.io import atomic_write_json

__all__ = ["MARKER", "LEGACY_MARKERS", "read_marker", "build_once"]

#: The completeness marker of every generated folder.
MARKER = ".comad-complete.json"
#: Markers of earlier versions of these builders: such a folder is ours and is rebuilt.
LEGACY_MARKERS = ("comad_demo.json", "DEMO_DATA.json", ".complete")
_POLICIES = ("replace", "raise")


def read_marker(root: str | os.PathLike) -> dict[str, Any] | None:
    """The marker of ``root`` (``{'kind', 'params', 'info'}``), or None when absent or unreadable."""
    try:
        data = json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and {"kind", "params"} <= set(data) else None


def _canonical(params: Mapping[str, Any]) -> Any:
    return json.loads(json.dumps(dict(params), sort_keys=True, default=str))


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(root.parent / f".{root.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)  # a lock, never written
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _foreign_file(root: Path) -> str | None:
    """A file under ``root`` when it holds files but no marker of ours (current or legacy)."""
    if not root.exists() or any((root / m).is_file() for m in (MARKER, *LEGACY_MARKERS)):
        return None
    if not root.is_dir():
        return root.name
    for dirpath, _, files in os.walk(root):
        for name in files:
            return Path(dirpath, name).relative_to(root).as_posix()
    return None


def _swap_in(tmp: Path, root: Path) -> None:
    """Put ``tmp`` at ``root``; an older set of ours there is moved aside, then deleted."""
    old = None
    if root.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.old.", dir=root.parent))
        os.replace(root, old / "set")
    os.replace(tmp, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_once(root: str | os.PathLike, kind: str, params: Mapping[str, Any],
               make: Callable[[Path], Mapping[str, Any] | None], *, on_mismatch: str = "replace",
               force: bool = False) -> Path:
    """Make ``root`` with ``make(tmp_folder)`` unless it already holds the set ``kind``/``params``.

    Args:
        root: the folder to make.
        kind: what the folder holds (e.g. ``'demo-imagefolder'``), recorded in the marker.
        params: the parameters that determine the content (JSON-serialisable).
        make: writes the content into the empty folder it is given; may return extra
            information (files, counts) recorded in the marker as ``info``.
        on_mismatch: a set of ours made with other parameters is ``'replace'``d, or ``'raise'``
            a ``ValueError`` naming both parameter sets.
        force: rebuild even when the marker matches.

    Returns:
        ``root`` as a ``Path``.

    Raises:
        FileExistsError: ``root`` holds files that no builder of ours wrote (named; untouched).
        ValueError: ``on_mismatch='raise'`` and the folder was made with other parameters.
    """
    if on_mismatch not in _POLICIES:
        raise ValueError(f"on_mismatch must be one of {_POLICIES}, got {on_mismatch!r}")
    root, want = Path(root), dict(kind=kind, params=_canonical(params))
    with _locked(root):
        made = read_marker(root)
        if made is not None and not force and {k: made[k] for k in want} == want:
            return root
        foreign = _foreign_file(root)
        if foreign is not None:
            raise FileExistsError(f"{kind} folder {root} holds files that this tool did not write (e.g. {foreign}) "
                                  "and no completeness marker; remove it or pass an empty or new folder")
        if made is not None and made.get("kind") == kind and on_mismatch == "raise" and not force:
            raise ValueError(f"{kind} folder {root} was made with {made['params']}, asked for {want['params']}; "
                             "delete the folder or choose another")
        tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
        try:
            info = make(tmp)
            atomic_write_json(dict(want, info=dict(info or {})), tmp / MARKER)
            _swap_in(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root
