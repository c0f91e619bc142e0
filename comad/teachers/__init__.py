"""Frozen ViT teachers from the official MAE, MoCo v3 and iBOT (or any timm ViT) checkpoints.

- :mod:`comad.checkpoint`: safe read, layout detection and conversion to timm names (the layout
  table), architecture from the shapes, expectation check, strict load (shared with students).
- :mod:`.load`: :func:`load_teacher`, a frozen :class:`Teacher` from a checkpoint file.
- :mod:`.teacher`: :class:`Teacher`, the frozen ViT run on the kept patches only.
- :mod:`.synthetic`: files in the official layouts with random weights (tests, demo).
"""
from ..checkpoint import (ARCH_PRESETS, FORMATS, LAYOUTS, build_vit, check_arch, convert_state_dict, detect_format,
                          expected_arch, infer_arch)
from .load import load_teacher
from .teacher import Teacher

__all__ = [
    "FORMATS",
    "LAYOUTS",
    "ARCH_PRESETS",
    "Teacher",
    "build_vit",
    "check_arch",
    "convert_state_dict",
    "detect_format",
    "expected_arch",
    "infer_arch",
    "load_teacher",
]
