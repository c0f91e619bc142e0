"""ImageNet-style image dataset: ImageFolder layout or a file list; a plain torch ``Dataset``.

Layouts:

* folder: ``<root>/<split>/<class>/**/*.{JPEG,jpg,png,...}``; class index = position of the
  class folder name in the sorted list of class folders (the torchvision/timm convention).
  Files are found with ``os.scandir`` only (threads over class folders; no image is opened at
  start-up), so indexing ImageNet's 1.28 M files takes seconds on a local disk.
* file list: a text file with one ``<relative path> [label]`` per line, paths relative to
  ``root`` (blank lines and lines starting with ``#`` are skipped). Either every line has an
  integer label or none has; without labels the class is the file's parent folder name and the
  class index its position among the sorted names. ``file_list`` itself may be absolute or
  relative to the working directory, else it is looked up under ``root``.

Each sample is ``dict(inputs=Tensor(3, H, W), label=int, index=int, corrupt_skipped=int)``;
mmengine's (and torch's) ``default_collate`` stacks ``inputs`` to (B, 3, H, W) and turns the
ints into (B,) int64 tensors.

Corrupt images (a file that exists but does not decode): with ``on_corrupt='error'`` an
:class:`CorruptImageError` naming the file is raised; with ``'skip'`` a warning naming the file
is logged and the next index (``(i + 1) % len``, then ``i + 2`` ...) is returned instead.
``corrupt_skipped`` is the number of files skipped to produce that sample, so
``batch['corrupt_skipped'].sum()`` is the number of skips in a batch: summing it over batches
in the trainer gives a count that is correct with any number of DataLoader worker processes
(whose own counters the main process cannot see). ``index`` is the index of the sample actually
returned. Each process also keeps ``corrupt_files`` (the distinct bad files it met); when their
number exceeds ``max_corrupt_frac * len(dataset)`` the dataset raises
:class:`TooManyCorruptImagesError`: a dataset that broken should be fixed, not sampled around.
A file that is missing at read time is never skipped (``FileNotFoundError``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

__all__ = [
    "IMG_EXTENSIONS",
    "DatasetLayoutError",
    "CorruptImageError",
    "TooManyCorruptImagesError",
    "ImageFolderDataset",
    "scan_image_folder",
    "read_file_list",
    "count_corrupt",
]

logger = logging.getLogger(__name__)

#: File name endings taken as images (compared case-insensitively).
IMG_EXTENSIONS: tuple[str, ...] = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

_PATTERN = "*.{JPEG,jpg,png,...}"


class DatasetLayoutError(ValueError):
    """The dataset folder or file list does not have the expected layout; the message says what was expected and what was found."""


class CorruptImageError(OSError):
    """An image file exists but cannot be decoded; the message names the file."""


class TooManyCorruptImagesError(RuntimeError):
    """More distinct corrupt files than ``max_corrupt_frac`` of the dataset."""


def _is_image(name: str, extensions: tuple[str, ...]) -> bool:
    return not name.startswith(".") and name.lower().endswith(extensions)


def _scan_class_dir(path: str, extensions: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """Image paths under ``path`` (recursive, relative to ``path``, sorted) and the other file names met."""
    images: list[str] = []
    others: list[str] = []
    stack = [("", path)]
    while stack:
        rel, full = stack.pop()
        with os.scandir(full) as it:
            for e in it:
                if e.is_dir():
                    if not e.name.startswith("."):
                        stack.append((rel + e.name + "/", e.path))
                elif _is_image(e.name, extensions):
                    images.append(rel + e.name)
                elif len(others) < 5:
                    others.append(rel + e.name)
    images.sort()
    return images, others


def _describe_dir(path: Path, limit: int = 8) -> str:
    try:
        names = sorted(os.listdir(path))
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if not names:
        return "nothing (empty folder)"
    shown = ", ".join(names[:limit])
    return f"{len(names)} entries: {shown}" + (", ..." if len(names) > limit else "")


def _scan_classes(split_dir: Path, classes: list[str], exts: tuple[str, ...],
                  num_threads: int) -> list[tuple[list[str], list[str]]]:
    """Each class folder's (images, other files), on a thread pool; a bar from 100 classes on."""
    from tqdm import tqdm

    with tqdm(total=len(classes), desc=f"indexing {split_dir}", unit="class", leave=False,
              disable=True if len(classes) < 100 else None) as bar, \
            ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(classes)))) as pool:
        results = []
        for res in pool.map(lambda c: _scan_class_dir(os.path.join(split_dir, c), exts), classes):
            results.append(res)
            bar.update(1)
    return results


def scan_image_folder(
    split_dir: str | os.PathLike,
    extensions: Sequence[str] = IMG_EXTENSIONS,
    allow_empty_classes: bool = False,
    num_threads: int = 16,
) -> tuple[list[str], list[str], np.ndarray]:
    """Index ``<split_dir>/<class>/**/<image>`` without opening any image.

    Returns:
        (classes, relative paths ``<class>/<...>/<file>``, int64 labels), paths grouped by
        class in sorted class order and sorted within a class.

    Raises:
        DatasetLayoutError: no class folders, or a class folder without images (unless
            ``allow_empty_classes``).
    """
    split_dir = Path(split_dir)
    exts = tuple(e.lower() for e in extensions)
    pattern = f"{split_dir}/<class>/{_PATTERN}"
    with os.scandir(split_dir) as it:
        entries = list(it)
    classes = sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    if not classes:
        loose = sorted(e.name for e in entries if e.is_file() and _is_image(e.name, exts))
        found = (
            f"{len(loose)} image files directly in {split_dir} (e.g. {', '.join(loose[:3])}): put them in "
            f"one folder per class, or pass file_list"
            if loose
            else _describe_dir(split_dir)
        )
        raise DatasetLayoutError(f"no class folders in {split_dir}: expected {pattern}, found {found}")
    t0 = time.perf_counter()
    results = _scan_classes(split_dir, classes, exts, num_threads)
    empty = [(c, others) for c, (imgs, others) in zip(classes, results) if not imgs]
    if empty and not allow_empty_classes:
        first_c, first_o = empty[0]
        found = f"other files only ({', '.join(first_o)})" if first_o else "no files"
        names = ", ".join(c for c, _ in empty[:5]) + (", ..." if len(empty) > 5 else "")
        raise DatasetLayoutError(
            f"{len(empty)} of {len(classes)} class folders in {split_dir} have no images ({names}): "
            f"expected {pattern} (extensions {', '.join(exts)}), found in {split_dir / first_c}: {found}"
        )
    paths: list[str] = []
    labels: list[np.ndarray] = []
    for label, (c, (imgs, _)) in enumerate(zip(classes, results)):
        paths.extend(f"{c}/{p}" for p in imgs)
        labels.append(np.full(len(imgs), label, dtype=np.int64))
    logger.info("indexed %d images in %d classes under %s in %.1fs", len(paths), len(classes), split_dir, time.perf_counter() - t0)
    return classes, paths, np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)


def read_file_list(list_file: str | os.PathLike) -> tuple[list[str], list[int] | None, list[int]]:
    """Parse a file list: one ``<relative path> [label]`` per line.

    Returns:
        (paths, labels or None when no line has a label, 1-based line numbers).

    Raises:
        DatasetLayoutError: a malformed line, a non-integer or negative label, a mix of lines
            with and without labels, or no entries; the message names the file and the line.
    """
    list_file = Path(list_file)
    paths: list[str] = []
    labels: list[int] = []
    lines: list[int] = []
    unlabelled_line = labelled_line = 0
    with open(list_file, encoding="utf-8") as f:
        for n, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) > 2:
                raise DatasetLayoutError(
                    f"{list_file}, line {n}: expected '<relative path> [label]', got {len(parts)} fields: {line!r}"
                )
            if len(parts) == 2:
                try:
                    label = int(parts[1])
                except ValueError:
                    raise DatasetLayoutError(
                        f"{list_file}, line {n}: the label must be an integer, got {parts[1]!r}"
                    ) from None
                if label < 0:
                    raise DatasetLayoutError(f"{list_file}, line {n}: the label must be >= 0, got {label}")
                labels.append(label)
                labelled_line = labelled_line or n
            else:
                unlabelled_line = unlabelled_line or n
            if labelled_line and unlabelled_line:
                raise DatasetLayoutError(
                    f"{list_file}: either every line has a label or none has; line {labelled_line} has one, "
                    f"line {unlabelled_line} has not"
                )
            paths.append(parts[0])
            lines.append(n)
    if not paths:
        raise DatasetLayoutError(f"{list_file}: no entries (expected one '<relative path> [label]' per line)")
    return paths, (labels if labelled_line else None), lines


def count_corrupt(batch: dict[str, Any]) -> int:
    """Number of corrupt files skipped to build a collated batch (0 when the key is absent)."""
    v = batch.get("corrupt_skipped")
    if v is None:
        return 0
    if isinstance(v, torch.Tensor):
        return int(v.sum().item())
    return int(sum(int(x) for x in v))


class ImageFolderDataset(Dataset):
    """ImageNet-style classification images (folder layout or file list).

    Args:
        root: dataset root.
        split: sub-folder of ``root`` holding the class folders (``None`` or ``''``: ``root``
            itself). Ignored with ``file_list``.
        file_list: optional text file of ``<path relative to root> [label]`` lines.
        transform: callable applied to the RGB PIL image; ``None`` gives the decoded image as
            a uint8 (3, H, W) tensor.
        on_corrupt: ``'skip'`` (warn, count, return the next index) or ``'error'``.
        max_corrupt_frac: the most distinct corrupt files tolerated per process, as a fraction
            of the dataset, before :class:`TooManyCorruptImagesError` (``'skip'`` mode only).
        extensions: image file endings (folder mode).
        allow_empty_classes: accept class folders without images (folder mode).
        check_files: with ``file_list``, check at start-up that every listed file exists.

    Attributes:
        classes: class names (folder mode, or file list without labels), else ``None``.
        class_to_idx: name -> index (when ``classes`` is known).
        labels: (N,) int64 numpy array.
        corrupt_files: distinct corrupt files met by this process.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str | None = "train",
        file_list: str | os.PathLike | None = None,
        transform: Callable[[Image.Image], Any] | None = None,
        on_corrupt: str = "skip",
        max_corrupt_frac: float = 0.01,
        extensions: Sequence[str] = IMG_EXTENSIONS,
        allow_empty_classes: bool = False,
        check_files: bool = True,
    ) -> None:
        if on_corrupt not in ("skip", "error"):
            raise ValueError(f"on_corrupt: expected 'skip' or 'error', got {on_corrupt!r}")
        if not (0 <= max_corrupt_frac <= 1):
            raise ValueError(f"max_corrupt_frac: expected a fraction in [0, 1], got {max_corrupt_frac!r}")
        self.root = Path(root)
        if not self.root.is_dir():
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise FileNotFoundError(f"dataset root {self.root} {what}")
        self.transform = transform
        self.on_corrupt = on_corrupt
        self.max_corrupt_frac = float(max_corrupt_frac)
        self.corrupt_files: set[str] = set()
        self.file_list: Path | None = None
        self._lines: np.ndarray | None = None
        self.classes: list[str] | None
        if file_list is not None:
            self.file_list = self._resolve_list(file_list)
            self.base = self.root
            paths, labels, lines = read_file_list(self.file_list)
            if labels is None:
                names = [os.path.basename(os.path.dirname(p)) for p in paths]
                if any(not n for n in names):
                    bad = next(i for i, n in enumerate(names) if not n)
                    raise DatasetLayoutError(
                        f"{self.file_list}, line {lines[bad]}: no label and no class folder in {paths[bad]!r}: "
                        f"expected '<class>/<file>' or '<path> <label>'"
                    )
                self.classes = sorted(set(names))
                idx = {c: i for i, c in enumerate(self.classes)}
                labels = [idx[n] for n in names]
            else:
                self.classes = None
            self._lines = np.asarray(lines, dtype=np.int64)
            if check_files:
                self._check_listed_files(paths, lines)
        else:
            self.base = self.root / split if split else self.root
            if not self.base.is_dir():
                raise FileNotFoundError(
                    f"split folder {self.base} does not exist (split={split!r}); found in {self.root}: "
                    f"{_describe_dir(self.root)}"
                )
            self.classes, paths, labels = scan_image_folder(self.base, extensions, allow_empty_classes)
        # Compact storage: one bytes array, not 1.28 M Python strings (whose refcounts would
        # copy every page into each forked DataLoader worker).
        self._paths = np.array([os.fsencode(p) for p in paths], dtype=np.bytes_)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)} if self.classes is not None else None

    # ----------------------------------------------------------------------------------- init
    def _resolve_list(self, file_list: str | os.PathLike) -> Path:
        p = Path(file_list)
        if p.is_file():
            return p
        if not p.is_absolute() and (self.root / p).is_file():
            return self.root / p
        where = str(p) if p.is_absolute() else f"{p} (nor {self.root / p})"
        raise FileNotFoundError(f"file list {where} does not exist")

    def _check_listed_files(self, paths: list[str], lines: list[int], num_threads: int = 16) -> None:
        base = str(self.base)
        with ThreadPoolExecutor(max_workers=num_threads) as pool:
            exists = list(pool.map(lambda p: os.path.isfile(os.path.join(base, p)), paths, chunksize=1024))
        missing = [i for i, ok in enumerate(exists) if not ok]
        if missing:
            i = missing[0]
            raise FileNotFoundError(
                f"{self.file_list}, line {lines[i]}: {paths[i]} does not exist (looked for {self.base / paths[i]}); "
                f"{len(missing)} of {len(paths)} listed files are missing"
            )

    # ------------------------------------------------------------------------------- access
    def __len__(self) -> int:
        return int(self._paths.shape[0])

    @property
    def metainfo(self) -> dict[str, Any]:
        """mmengine-style meta information."""
        return dict(classes=tuple(self.classes) if self.classes is not None else None, root=str(self.root))

    def path(self, index: int) -> Path:
        """Full path of sample ``index``."""
        return self.base / os.fsdecode(self._paths[index])

    def _where(self, index: int) -> str:
        if self.file_list is not None and self._lines is not None:
            return f"{self.path(index)} ({self.file_list}, line {int(self._lines[index])})"
        return str(self.path(index))

    def read_bytes(self, index: int) -> bytes:
        """The encoded file of sample ``index`` (for decoders outside this class, e.g. DALI).

        Raises:
            FileNotFoundError, PermissionError, IsADirectoryError: as :meth:`load_image`
                (named, with the file-list line).
        """
        try:
            with open(self.path(index), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(f"image {self._where(index)} does not exist") from None
        except (PermissionError, IsADirectoryError) as e:
            raise type(e)(f"image {self._where(index)}: cannot read it ({e.strerror})") from None

    def load_image(self, index: int) -> Image.Image:
        """Decode sample ``index`` as an RGB PIL image.

        Raises:
            FileNotFoundError: the file is gone (named, with its file-list line).
            CorruptImageError: the file does not decode (named).
        """
        path = self.path(index)
        try:
            with Image.open(path) as img:
                return img.convert("RGB")  # forces the full decode
        except FileNotFoundError:
            raise FileNotFoundError(f"image {self._where(index)} does not exist") from None
        except (PermissionError, IsADirectoryError) as e:
            raise type(e)(f"image {self._where(index)}: cannot read it ({e.strerror})") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
            raise CorruptImageError(f"corrupt image {self._where(index)}: {type(e).__name__}: {e}") from None

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        index = int(index) % n
        skipped = 0
        while True:
            i = (index + skipped) % n
            try:
                img = self.load_image(i)
                break
            except CorruptImageError as e:
                if self.on_corrupt == "error":
                    raise
                skipped += 1
                self.note_corrupt(i, e)
                if skipped >= n:
                    raise TooManyCorruptImagesError(f"every image of the dataset under {self.base} is corrupt") from None
        inputs = self.transform(img) if self.transform is not None else TF.pil_to_tensor(img)
        return dict(inputs=inputs, label=int(self.labels[i]), index=i, corrupt_skipped=skipped)

    def note_corrupt(self, index: int, err: Exception) -> None:
        """Record that sample ``index`` does not decode (this class's verdict or another
        decoder's, e.g. DALI's): warn once per file and count it in :attr:`corrupt_files`.

        Raises:
            CorruptImageError: with ``on_corrupt='error'`` (naming the file).
            TooManyCorruptImagesError: more distinct corrupt files than ``max_corrupt_frac``.
        """
        if self.on_corrupt == "error":
            if isinstance(err, CorruptImageError):
                raise err
            raise CorruptImageError(f"corrupt image {self._where(index)}: {err}")
        path = str(self.path(index))
        if path not in self.corrupt_files:
            self.corrupt_files.add(path)
            logger.warning("skipping %s (on_corrupt='skip'); the next index is used instead", err)
        limit = self.max_corrupt_frac * len(self)
        if len(self.corrupt_files) > limit:
            shown = ", ".join(sorted(self.corrupt_files)[:5])
            raise TooManyCorruptImagesError(
                f"{len(self.corrupt_files)} corrupt images met under {self.base}, more than "
                f"max_corrupt_frac={self.max_corrupt_frac} of the {len(self)} images (limit {limit:g}): "
                f"{shown}{', ...' if len(self.corrupt_files) > 5 else ''}. Fix or remove them "
                f"(or raise max_corrupt_frac)."
            )

    def __repr__(self) -> str:
        src = f"file_list={self.file_list}" if self.file_list is not None else f"folder={self.base}"
        ncls = len(self.classes) if self.classes is not None else len(np.unique(self.labels))
        return f"{type(self).__name__}({src}, images={len(self)}, classes={ncls}, on_corrupt={self.on_corrupt!r})"
