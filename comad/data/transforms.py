"""Image transforms for distillation (train) and evaluation, on torchvision transforms v2.

Train: ``RandomResizedCrop`` (bicubic, antialiased) + horizontal flip + to tensor + normalise,
the recipe of docs/method.md §3. Eval: resize the shorter side to ``img_size / crop_pct`` + centre crop.
All randomness comes from torch's global RNG, so a seeded process (mmengine seeds every
DataLoader worker) gives the same crops.

``normalize=False`` returns ``uint8`` (3, H, W) tensors instead of normalised ``float32``: a
quarter of the bytes through the worker queues and pinned memory, for a model whose data
preprocessor normalises on the GPU with :class:`Normalize255`.

``kind='timm'`` builds timm's ``create_transform`` (the ImageNet fine-tune's RandAugment / random
erasing recipe and the probes' crops: :func:`build_timm_transform`).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import v2

__all__ = [
    "IMAGENET_DEFAULT_MEAN",
    "IMAGENET_DEFAULT_STD",
    "Normalize255",
    "build_train_transform",
    "build_eval_transform",
    "build_timm_transform",
    "build_transform",
]


def _check_common(img_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if not isinstance(img_size, int) or img_size <= 0:
        raise ValueError(f"img_size: expected a positive int, got {img_size!r}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError(f"mean/std: expected 3 values each (RGB), got mean={tuple(mean)} std={tuple(std)}")
    if any(s <= 0 for s in std):
        raise ValueError(f"std: expected positive values, got {tuple(std)}")


class Normalize255(nn.Module):
    """Pixels on the 0-255 scale (uint8 or float, (B, 3, H, W), on any device) -> float32
    ``(x - 255·mean) / (255·std)``: the normalisation of ``normalize=True``, done where the batch is.

    Args:
        mean, std: per-channel statistics on the 0-1 scale (RGB).
        owner: who uses it, named in the error for bad statistics.
    """

    def __init__(self, mean: Sequence[float] = IMAGENET_DEFAULT_MEAN, std: Sequence[float] = IMAGENET_DEFAULT_STD,
                 owner: str = "Normalize255") -> None:
        super().__init__()
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"{owner}: mean and std need 3 values each (std > 0), got {tuple(mean)}, {tuple(std)}")
        self.register_buffer("mean", torch.tensor([255.0 * m for m in mean]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([255.0 * s for s in std]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x.float() - self.mean) / self.std


def _to_tensor(normalize: bool, mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    steps: list[Any] = [v2.ToImage()]
    if normalize:
        steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean=list(mean), std=list(std))]
    else:
        steps += [v2.ToDtype(torch.uint8, scale=True)]
    return steps


def build_train_transform(
    img_size: int = 224,
    scale: Sequence[float] = (0.2, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    hflip: float = 0.5,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    normalize: bool = True,
) -> Callable[[Any], torch.Tensor]:
    """RandomResizedCrop(bicubic) + flip + ToTensor + Normalize.

    Args:
        img_size: output side in pixels.
        scale: range of the crop's area as a fraction of the image (docs/method.md §3: 0.2-1).
        ratio: range of the crop's aspect ratio.
        hflip: probability of a horizontal flip (0 disables it).
        mean, std: per-channel normalisation (RGB, on the 0-1 scale).
        normalize: False -> uint8 output without normalisation (normalise on the device).

    Returns:
        A callable mapping a PIL image (or a uint8 tensor) to a (3, img_size, img_size) tensor.
    """
    _check_common(img_size, mean, std)
    lo, hi = float(scale[0]), float(scale[1])
    if not (0 < lo <= hi <= 1):
        raise ValueError(f"scale: expected 0 < min <= max <= 1, got {tuple(scale)}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio: expected 0 < min <= max, got {tuple(ratio)}")
    if not (0 <= hflip <= 1):
        raise ValueError(f"hflip: expected a probability in [0, 1], got {hflip!r}")
    steps: list[Any] = [
        v2.RandomResizedCrop(
            img_size,
            scale=(lo, hi),
            ratio=(float(ratio[0]), float(ratio[1])),
            interpolation=v2.InterpolationMode.BICUBIC,
            antialias=True,
        )
    ]
    if hflip > 0:
        steps.append(v2.RandomHorizontalFlip(p=hflip))
    return v2.Compose(steps + _to_tensor(normalize, mean, std))


def build_eval_transform(
    img_size: int = 224,
    crop_pct: float = 0.875,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    normalize: bool = True,
) -> Callable[[Any], torch.Tensor]:
    """Resize the shorter side to ``round(img_size / crop_pct)`` (bicubic) + centre crop.

    ``crop_pct=0.875`` is the usual ImageNet protocol (256 -> 224). Deterministic.
    """
    _check_common(img_size, mean, std)
    if not (0 < crop_pct <= 1):
        raise ValueError(f"crop_pct: expected a value in (0, 1], got {crop_pct!r}")
    resize = int(round(img_size / crop_pct))
    steps: list[Any] = [
        v2.Resize(resize, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
        v2.CenterCrop(img_size),
    ]
    return v2.Compose(steps + _to_tensor(normalize, mean, std))


def _posterize_black(img: Any, bits_to_keep: int, **_: Any) -> Any:
    """timm's posterize with Pillow < 13 semantics: 0 bits kept gives a black image (Pillow 13 raises)."""
    from PIL import Image, ImageOps

    if bits_to_keep >= 8:
        return img
    if bits_to_keep <= 0:
        return Image.new(img.mode, img.size)
    return ImageOps.posterize(img, bits_to_keep)


def posterize_zero_bits_compat(transform: Any) -> int:
    """Make the Posterize ops of a timm RandAugment accept 0 bits; returns how many ops were changed.

    RandAugment 'rand-m9-mstd0.5-inc1' clips sampled magnitudes to 10, where
    ``PosterizeIncreasing`` keeps 0 bits; Pillow 13's ``ImageOps.posterize`` refuses 0 bits
    (older Pillow returned a black image, the behaviour the recipe was tuned with). Only the
    ops of this transform instance are changed.
    """
    from timm.data.auto_augment import RandAugment

    changed = 0
    for t in getattr(transform, "transforms", []):
        if isinstance(t, RandAugment):
            for op in t.ops:
                if op.name.startswith("Posterize"):
                    op.aug_fn = _posterize_black
                    changed += 1
    return changed


def build_timm_transform(**kwargs: Any) -> Callable[[Any], torch.Tensor]:
    """``timm.data.create_transform(**kwargs)`` (sequences as tuples), its RandAugment posterize made to
    accept 0 bits (:func:`posterize_zero_bits_compat`)."""
    from timm.data import create_transform

    transform = create_transform(**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})
    posterize_zero_bits_compat(transform)
    return transform


_KINDS = {"train": build_train_transform, "eval": build_eval_transform, "timm": build_timm_transform}


def build_transform(spec: Callable[[Any], torch.Tensor] | dict[str, Any] | None) -> Callable[[Any], torch.Tensor] | None:
    """Turn a config entry into a transform.

    ``spec`` is a callable (returned as is), ``None``, or a dict ``{'kind': 'train' | 'eval' | 'timm',
    **kwargs}`` whose kwargs go to :func:`build_train_transform` / :func:`build_eval_transform` /
    :func:`build_timm_transform` (the key is ``kind``, not ``type``, so no registry ever tries to build it).
    """
    if spec is None or callable(spec):
        return spec
    if not isinstance(spec, dict):
        raise TypeError(f"transform: expected a callable, None or a dict with 'kind', got {type(spec).__name__}")
    cfg = dict(spec)
    kind = cfg.pop("kind", None)
    if kind not in _KINDS:
        raise ValueError(f"transform: 'kind' must be one of {sorted(_KINDS)}, got {kind!r} (in {spec!r})")
    try:
        return _KINDS[kind](**cfg)
    except TypeError as e:
        raise TypeError(f"transform {spec!r}: {e}") from None
