"""JPEG decoding on the GPU and batched RandomResizedCrop (plain torch / torchvision).

When CPU JPEG decoding cannot feed the GPU (PERF_NOTES: ~3k img/s from 16 processes against
a model step near 3k+ img/s), the workers only read the encoded bytes and the main process

1. decodes the whole batch with one batched nvJPEG call
   (``torchvision.io.decode_jpeg(list_of_bytes, device='cuda')``),
2. copies the decoded images (different sizes) into one zero-padded (B, 3, Hmax, Wmax) tensor,
3. draws every RandomResizedCrop box of the batch at once on the CPU
   (:func:`sample_crop_boxes`: torchvision's ``RandomResizedCrop`` parameter rule, 10
   attempts then the central-crop fallback, vectorised over the batch),
4. cuts and resizes all crops with one ``torchvision.ops.roi_align`` (bilinear, adaptive
   sampling grid = area averaging when shrinking), flips, and normalises.

Resampling differs from the CPU train transform (bicubic + antialias): roi_align averages a
bilinear ``ceil(box / out)``² grid per output pixel. Crop geometry (scale, aspect ratio,
placement) follows the same distribution as torchvision's ``RandomResizedCrop``. Everything
except the nvJPEG call also runs on the CPU (``device='cpu'``), which is how it is tested.
"""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..data.transforms import Normalize255

__all__ = [
    "sample_crop_boxes",
    "pad_images",
    "crop_resize_batch",
    "GpuRandomResizedCrop",
    "EncodedImageDataset",
    "collate_encoded",
    "split_encoded",
]


def sample_crop_boxes(
    heights: Tensor,
    widths: Tensor,
    scale: Sequence[float] = (0.2, 1.0),
    ratio: Sequence[float] = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    attempts: int = 10,
) -> Tensor:
    """RandomResizedCrop boxes for a batch of image sizes, in one vectorised draw.

    Same rule as ``torchvision.transforms.v2.RandomResizedCrop``: up to ``attempts`` draws of
    (area fraction ~ U(scale), log aspect ~ U(log ratio)); the first whose rounded box fits is
    placed uniformly; if none fits, the central crop clipped to the ratio range.

    Args:
        heights, widths: (B,) image sizes in pixels (integers, CPU).
        scale: range of the crop area as a fraction of the image area.
        ratio: range of the crop aspect ratio (width / height).
        generator: CPU generator (the draws of a batch depend on it only).
        attempts: attempts before the fallback (10 in torchvision).

    Returns:
        (B, 4) float32 boxes ``(x0, y0, x1, y1)`` on integer pixel edges: the crop covers pixel
        columns x0 .. x1-1 and rows y0 .. y1-1.
    """
    h = torch.as_tensor(heights).to(torch.float64).flatten()
    w = torch.as_tensor(widths).to(torch.float64).flatten()
    if h.shape != w.shape:
        raise ValueError(f"sample_crop_boxes: heights {tuple(h.shape)} and widths {tuple(w.shape)} differ in length")
    if bool((h < 1).any()) or bool((w < 1).any()):
        raise ValueError("sample_crop_boxes: image sizes must be >= 1 pixel")
    lo, hi = float(scale[0]), float(scale[1])
    if not 0 < lo <= hi:
        raise ValueError(f"sample_crop_boxes: scale must satisfy 0 < min <= max, got {tuple(scale)}")
    if not 0 < ratio[0] <= ratio[1]:
        raise ValueError(f"sample_crop_boxes: ratio must satisfy 0 < min <= max, got {tuple(ratio)}")
    if attempts < 1:
        raise ValueError(f"sample_crop_boxes: attempts must be >= 1, got {attempts}")
    b = h.shape[0]
    area = (h * w)[:, None]
    u = torch.rand(b, attempts, 4, generator=generator, dtype=torch.float64)
    target = area * (lo + (hi - lo) * u[..., 0])
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * u[..., 1]
    aspect = torch.exp(log_r)
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    ok = (cw > 0) & (cw <= w[:, None]) & (ch > 0) & (ch <= h[:, None])
    first = ok.to(torch.int8).argmax(dim=1, keepdim=True)  # first fitting attempt (0 if none)
    any_ok = ok.any(dim=1)
    cw = cw.gather(1, first)[:, 0]
    ch = ch.gather(1, first)[:, 0]
    # uniform integer offsets in [0, size - crop], as torch.randint(0, size - crop + 1)
    top = torch.floor(u.gather(1, first[..., None].expand(-1, -1, 4))[:, 0, 2] * (h - ch + 1)).clamp(max=h - ch)
    left = torch.floor(u.gather(1, first[..., None].expand(-1, -1, 4))[:, 0, 3] * (w - cw + 1)).clamp(max=w - cw)
    # central-crop fallback
    in_ratio = w / h
    fw = torch.where(in_ratio < ratio[0], w, torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w))
    fh = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    ftop = torch.div(h - fh, 2, rounding_mode="floor")
    fleft = torch.div(w - fw, 2, rounding_mode="floor")
    cw, ch = torch.where(any_ok, cw, fw), torch.where(any_ok, ch, fh)
    top, left = torch.where(any_ok, top, ftop), torch.where(any_ok, left, fleft)
    return torch.stack([left, top, left + cw, top + ch], dim=1).to(torch.float32)


def pad_images(images: Sequence[Tensor], dtype: torch.dtype = torch.float32) -> Tensor:
    """Copy (C, h_i, w_i) images into one zero-padded (B, C, max h, max w) tensor of ``dtype``.

    One copy per image (a device kernel each on CUDA; no host synchronisation).
    """
    if len(images) == 0:
        raise ValueError("pad_images: no images")
    c = images[0].shape[0]
    if any(im.ndim != 3 or im.shape[0] != c for im in images):
        raise ValueError(f"pad_images: expected (C, H, W) images with C={c}, got shapes {[tuple(im.shape) for im in images][:4]}")
    hm = max(int(im.shape[1]) for im in images)
    wm = max(int(im.shape[2]) for im in images)
    out = torch.zeros(len(images), c, hm, wm, dtype=dtype, device=images[0].device)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]].copy_(im)
    return out


def crop_resize_batch(images: Tensor, boxes: Tensor, size: int, flip: Tensor | None = None) -> Tensor:
    """Cut box ``i`` out of image ``i`` and resize it to ``size``² with one ``roi_align``.

    Args:
        images: (B, C, H, W) floating tensor (padding beyond an image's own size is never
            sampled when its box lies inside the image).
        boxes: (B, 4) ``(x0, y0, x1, y1)`` pixel-edge boxes (as from :func:`sample_crop_boxes`).
        size: output side.
        flip: optional (B,) bool, mirror those outputs horizontally.

    Returns:
        (B, C, size, size) tensor of ``images.dtype``.
    """
    from torchvision.ops import roi_align

    if images.ndim != 4 or boxes.shape != (images.shape[0], 4):
        raise ValueError(f"crop_resize_batch: expected images (B,C,H,W) and boxes (B,4), got {tuple(images.shape)} and {tuple(boxes.shape)}")
    b = images.shape[0]
    idx = torch.arange(b, device=images.device, dtype=images.dtype)[:, None]
    rois = torch.cat([idx, boxes.to(device=images.device, dtype=images.dtype)], dim=1)
    # aligned=True: pixel i covers [i, i+1) so a box on pixel edges samples exactly its pixels;
    # sampling_ratio=-1: ceil(box / size) samples per output pixel and axis (area averaging)
    out = roi_align(images, rois, output_size=(size, size), spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    if flip is not None:
        flip = flip.to(device=out.device, dtype=torch.bool).view(b, 1, 1, 1)
        out = torch.where(flip, out.flip(-1), out)
    return out


class GpuRandomResizedCrop:
    """Decode a batch of JPEG byte tensors on ``device`` and return normalised crops.

    Args:
        img_size: output side.
        scale, ratio, hflip: as :func:`comad.data.build_train_transform`.
        mean, std: per-channel normalisation on the 0-1 scale (RGB).
        device: where to decode and crop (``'cuda'`` uses nvJPEG; ``'cpu'`` libjpeg).
        seed: seed of the crop / flip generator (a CPU ``torch.Generator``).
        normalize: False returns float values on the 0-255 scale, not normalised.
    """

    def __init__(self, img_size: int = 224, scale: Sequence[float] = (0.2, 1.0), ratio: Sequence[float] = (3 / 4, 4 / 3),
                 hflip: float = 0.5, mean: Sequence[float] = (0.485, 0.456, 0.406),
                 std: Sequence[float] = (0.229, 0.224, 0.225), device: str | torch.device = "cuda", seed: int = 0,
                 normalize: bool = True) -> None:
        if not isinstance(img_size, int) or img_size < 1:
            raise ValueError(f"GpuRandomResizedCrop: img_size must be a positive int, got {img_size!r}")
        if not 0 <= hflip <= 1:
            raise ValueError(f"GpuRandomResizedCrop: hflip must be a probability in [0, 1], got {hflip!r}")
        self.img_size = img_size
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.hflip = float(hflip)
        self.device = torch.device(device)
        self.normalize = normalize
        self.generator = torch.Generator().manual_seed(int(seed))
        self.norm = Normalize255(mean, std, owner="GpuRandomResizedCrop").to(self.device)

    def decode(self, encoded: list[Tensor], names: Sequence[str] | None = None) -> list[Tensor]:
        """Decode to RGB uint8 (3, h, w) tensors on ``self.device`` (one batched call).

        A batch that fails is decoded image by image to name the bad file(s) in the error.
        """
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return list(decode_jpeg(list(encoded), mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError as batch_error:
            bad = []
            for i, data in enumerate(encoded):
                try:
                    decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)
                except RuntimeError as e:
                    bad.append(f"{names[i] if names is not None else f'batch item {i}'} ({e})")
            from comad.data import CorruptImageError

            raise CorruptImageError(
                "JPEG decode failed for " + ("; ".join(bad) if bad else f"the batch ({batch_error})")
            ) from None

    def __call__(self, encoded: list[Tensor], names: Sequence[str] | None = None) -> Tensor:
        """(B,) list of 1-D uint8 JPEG byte tensors -> (B, 3, img_size, img_size) float32."""
        imgs = self.decode(encoded, names)
        h = torch.tensor([im.shape[1] for im in imgs])
        w = torch.tensor([im.shape[2] for im in imgs])
        boxes = sample_crop_boxes(h, w, self.scale, self.ratio, generator=self.generator)
        flip = torch.rand(len(imgs), generator=self.generator) < self.hflip
        if self.device.type == "cuda":
            boxes, flip = boxes.pin_memory(), flip.pin_memory()
        batch = pad_images(imgs, torch.float32)
        out = crop_resize_batch(batch, boxes.to(self.device, non_blocking=True), self.img_size,
                                flip.to(self.device, non_blocking=True))
        return self.norm(out) if self.normalize else out


class EncodedImageDataset(Dataset):
    """The files of an image dataset as raw bytes (decoding happens later, batched).

    Args:
        dataset: an object with ``path(i)``, ``labels`` and ``__len__`` — e.g.
            :class:`comad.data.ImageFolderDataset`.

    Each sample is ``dict(data=uint8 1-D tensor, label=int, index=int, path=str)``. Files that
    do not start with the JPEG marker are refused here, naming the file.
    """

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        from torchvision.io import read_file

        path = os.fspath(self.dataset.path(index))
        data = read_file(path)
        if data.numel() < 4 or int(data[0]) != 0xFF or int(data[1]) != 0xD8:
            from comad.data import CorruptImageError

            raise CorruptImageError(f"{path}: not a JPEG file (GPU decoding reads JPEG only)")
        return dict(data=data, label=int(self.dataset.labels[index]), index=int(index), path=path)


def collate_encoded(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Collate :class:`EncodedImageDataset` samples into one flat byte tensor + lengths.

    One tensor per batch (not one per image) crosses the worker queue: with hundreds of images
    per batch, per-image tensors would each hold a shared-memory file descriptor in flight.
    :func:`split_encoded` gives the per-image views back.
    """
    return dict(
        data=torch.cat([s["data"] for s in batch]),
        lengths=torch.tensor([s["data"].numel() for s in batch], dtype=torch.long),
        label=torch.tensor([s["label"] for s in batch], dtype=torch.long),
        index=torch.tensor([s["index"] for s in batch], dtype=torch.long),
        path=[s["path"] for s in batch],
    )


def split_encoded(batch: dict[str, Any]) -> list[Tensor]:
    """The per-image byte tensors (views) of a :func:`collate_encoded` batch."""
    return list(torch.split(batch["data"], batch["lengths"].tolist()))
