"""Data for distillation: ImageNet-style dataset, transforms and packaged demo photos.

Plain torch; the mmengine registry entry (``type='ComadImageFolder'``) lives in
:mod:`comad.data.registry`, imported only by configs (``custom_imports``). The DALI data path
(``data.backend='dali'``: :mod:`comad.data.dali`, :mod:`comad.data.dali_loader`) and the
ImageNet-sized benchmark JPEGs (:mod:`comad.data.imagenet_like`) are imported on demand.
"""
from .dataset import (
    IMG_EXTENSIONS,
    CorruptImageError,
    DatasetLayoutError,
    ImageFolderDataset,
    TooManyCorruptImagesError,
    count_corrupt,
    read_file_list,
    scan_image_folder,
)
from .demo import DEMO_PHOTOS, load_demo_photo, make_demo_imagefolder, write_corrupt_jpeg
from .transforms import build_eval_transform, build_train_transform, build_transform

__all__ = [
    "IMG_EXTENSIONS",
    "CorruptImageError",
    "DatasetLayoutError",
    "ImageFolderDataset",
    "TooManyCorruptImagesError",
    "count_corrupt",
    "read_file_list",
    "scan_image_folder",
    "DEMO_PHOTOS",
    "load_demo_photo",
    "make_demo_imagefolder",
    "write_corrupt_jpeg",
    "build_eval_transform",
    "build_train_transform",
    "build_transform",
]
