"""Fast paths around the distillation step (plain torch / torchvision).

- :mod:`.gpu_decode`: JPEG decoding on the GPU (nvJPEG) with all RandomResizedCrop crops of a
  batch cut by one batched ``roi_align``; the crop sampling runs (and is tested) on the CPU.
"""
from .gpu_decode import (
    EncodedImageDataset,
    GpuRandomResizedCrop,
    collate_encoded,
    crop_resize_batch,
    pad_images,
    sample_crop_boxes,
    split_encoded,
)

__all__ = [
    "EncodedImageDataset",
    "GpuRandomResizedCrop",
    "collate_encoded",
    "crop_resize_batch",
    "pad_images",
    "sample_crop_boxes",
    "split_encoded",
]
