"""Frozen ViT teachers from the official MAE, MoCo v3 and iBOT (or any timm ViT) checkpoints.

- :mod:`.formats`: layout detection from the keys and conversion to timm names (rule tables).
- :mod:`.load`: safe read, architecture from the shapes, expectation check, strict load.
- :mod:`.teacher`: :class:`Teacher`, the frozen ViT run on the kept patches only.
- :mod:`.synthetic`: files in the official layouts with random weights (tests, demo).
"""
from .formats import FORMATS, LAYOUTS, convert_state_dict, detect_format
from .load import ARCH_PRESETS, build_vit, check_arch, expected_arch, infer_arch, load_teacher
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
