"""Make mmengine 0.10's own checkpoints load with ``torch.load(weights_only=True)``.

torch >= 2.6 loads with ``weights_only=True`` by default, and mmengine's resume files then fail
(``Unsupported global: ... HistoryBuffer``). Turning safe loading off process-wide
(``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1``) would also unpickle anything a stranger's checkpoint
holds. Instead, :func:`enable_safe_resume`:

1. makes ``HistoryBuffer`` pickle as plain data: its state is two numpy arrays and an int,
   but pickled instances also carried bound methods (``getattr(HistoryBuffer, 'min')``), which
   need ``getattr`` — a global no allow-list may contain. The methods are class-level
   registrations, so dropping them from the instance state loses nothing;
2. replaces mmengine's loader for local files with one that calls ``torch.load(
   weights_only=True)`` with an allow-list of the data types mmengine writes (HistoryBuffer,
   numpy arrays, dtypes and scalars). Every file — resume or ``load_from`` — goes through it;
   a checkpoint that needs anything else is refused with a :class:`comad.io.CheckpointError`.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .io import safe_torch_load

__all__ = ["mmengine_safe_globals", "enable_safe_resume", "load_local_checkpoint"]

_enabled = False


def _numpy_globals() -> list[Any]:
    dtype_classes = {type(np.dtype(t)) for t in (np.float16, np.float32, np.float64, np.int8, np.int16,
                                                 np.int32, np.int64, np.uint8, np.bool_)}
    return [np._core.multiarray._reconstruct, np._core.multiarray.scalar, np.ndarray, np.dtype, *sorted(dtype_classes, key=str)]


def _history_buffer_getstate(self: Any) -> dict[str, Any]:
    return {k: v for k, v in self.__dict__.items() if "statistics_methods" not in k}


def mmengine_safe_globals() -> list[Any]:
    """The data-only types found in mmengine 0.10 Runner checkpoints."""
    from mmengine.logging.history_buffer import HistoryBuffer

    return [HistoryBuffer, *_numpy_globals()]



def load_local_checkpoint(filename: str, map_location: Any = None) -> Any:
    """mmengine ``CheckpointLoader`` scheme for local paths: safe load with the allow-list."""
    return safe_torch_load(filename, extra_globals=mmengine_safe_globals(), map_location=map_location or "cpu")


def enable_safe_resume() -> None:
    """Install the two changes above (idempotent). Call before building a Runner."""
    global _enabled
    if _enabled:
        return
    from mmengine.logging.history_buffer import HistoryBuffer
    from mmengine.runner.checkpoint import CheckpointLoader

    HistoryBuffer.__getstate__ = _history_buffer_getstate  # type: ignore[method-assign]
    CheckpointLoader.register_scheme(prefixes="", loader=load_local_checkpoint, force=True)
    _enabled = True
