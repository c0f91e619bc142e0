"""The idx format of MNIST / Fashion-MNIST (gzipped): read and write uint8 arrays."""
from __future__ import annotations

import gzip
import os

import numpy as np

__all__ = ["read_idx", "write_idx"]


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """An idx file (gzipped) as a uint8 array of its shape.

    Raises:
        ValueError: the file is not a uint8 idx file (named).
    """
    with gzip.open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\x00\x00" or data[2] != 0x08:
        raise ValueError(f"{path}: not a uint8 idx file (magic {data[:4]!r})")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(array: np.ndarray, path: str | os.PathLike) -> None:
    """Write a uint8 array as a gzipped idx file (for tests: the format :func:`read_idx` reads)."""
    a = np.ascontiguousarray(array, dtype=np.uint8)
    head = bytes([0, 0, 0x08, a.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in a.shape)
    with gzip.open(path, "wb") as f:
        f.write(head + a.tobytes())
