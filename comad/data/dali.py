"""NVIDIA DALI graphs of the train transform: decode with a random-crop ROI, resize, flip, uint8 CHW.

:class:`CropSpec` reads the crop from the torch train transform itself
(:func:`comad.data.transforms.build_train_transform` with ``normalize=False``), so both backends
take one config entry and cannot drift apart:

* ``fn.decoders.image_random_crop``: the crop's area fraction ~ U(``scale``) and its aspect
  ratio (width / height) log-uniform in ``ratio``, up to 10 attempts, then the whole image
  clipped to the ratio range (torchvision's ``RandomResizedCrop`` rule; DALI also re-checks the
  ratio after rounding to whole pixels). Only the crop's region is decoded where the format
  allows it; with ``device_id`` set the ``mixed`` decoder runs on the GPU (the hardware JPEG
  decoder on A100 / H100 where present).
* ``fn.resize`` to ``img_size`` with the transform's interpolation and antialiasing (bicubic +
  antialias: the mean absolute difference to torchvision's resize of the same crop is about
  0.2 grey levels, ``tests/test_data_dali.py``).
* ``fn.crop_mirror_normalize``: horizontal flip with probability ``hflip``, HWC -> CHW, uint8
  kept (the model's ``ComadDataPreprocessor`` normalises on the device, as for the torch path).

The random draws come from DALI's generator (seeded per pipeline), not from torch's: the
crops follow the same distribution as the torch path's, not the same values.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torchvision.transforms import v2

__all__ = ["DALI_REQUIREMENT", "import_dali", "CropSpec", "build_train_pipeline", "DecodeChecker", "dali_error_gist"]

#: The pip requirement of the ``dali`` extra (pyproject.toml).
DALI_REQUIREMENT = "nvidia-dali-cuda130==2.4.0"

_INTERP = {v2.InterpolationMode.BICUBIC: "INTERP_CUBIC", v2.InterpolationMode.BILINEAR: "INTERP_LINEAR",
           v2.InterpolationMode.NEAREST: "INTERP_NN"}
_PASS = (v2.ToImage, v2.Compose)


def import_dali() -> Any:
    """``nvidia.dali``, or an ImportError that says how to install it."""
    try:
        import nvidia.dali as dali
        import nvidia.dali.fn  # noqa: F401
        import nvidia.dali.types  # noqa: F401
    except ImportError as e:
        raise ImportError(f"data.backend='dali' needs NVIDIA DALI ({e}); install the extra: "
                          f"pip install -e '.[dali]' ({DALI_REQUIREMENT})") from None
    return dali


@dataclasses.dataclass(frozen=True)
class CropSpec:
    """The train transform's crop and flip, as the DALI graph takes them.

    Attributes:
        size: output (height, width) in pixels.
        scale: range of the crop's area as a fraction of the image's.
        ratio: range of the crop's aspect ratio (width / height).
        hflip: probability of a horizontal flip.
        interpolation: a ``nvidia.dali.types.DALIInterpType`` name (``INTERP_CUBIC`` ...).
        antialias: antialiased downscaling.
    """

    size: tuple[int, int]
    scale: tuple[float, float]
    ratio: tuple[float, float]
    hflip: float
    interpolation: str
    antialias: bool

    @classmethod
    def from_transform(cls, transform: Any) -> "CropSpec":
        """Read a ``build_train_transform(..., normalize=False)`` Compose.

        Raises:
            ValueError: not such a transform (no RandomResizedCrop, a normalising or float
                output, or a step DALI does not reproduce); the message names it.
        """
        steps = list(transform.transforms) if isinstance(transform, v2.Compose) else [transform]
        crop = [t for t in steps if isinstance(t, v2.RandomResizedCrop)]
        if len(crop) != 1:
            raise ValueError(f"data.backend='dali': the dataset's transform must be the train transform "
                             f"(transform=dict(kind='train', ..., normalize=False)) with one RandomResizedCrop, got {transform!r}")
        flips = [t.p for t in steps if isinstance(t, v2.RandomHorizontalFlip)]
        for t in steps:
            if isinstance(t, v2.ToDtype) and t.dtype is not None and t.dtype != torch.uint8:
                raise ValueError("data.backend='dali' hands uint8 crops to the model's ComadDataPreprocessor (which "
                                 "normalises them on the device): set the train transform's normalize=False")
            if not isinstance(t, (*_PASS, v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.ToDtype)):
                raise ValueError(f"data.backend='dali' does not reproduce the transform step {t!r} (it does "
                                 "RandomResizedCrop, horizontal flip and uint8 output)")
        c = crop[0]
        if c.interpolation not in _INTERP:
            raise ValueError(f"data.backend='dali': interpolation {c.interpolation} has no DALI equivalent here "
                             f"(supported: {', '.join(m.value for m in _INTERP)})")
        return cls(size=(int(c.size[0]), int(c.size[1])), scale=(float(c.scale[0]), float(c.scale[1])),
                   ratio=(float(c.ratio[0]), float(c.ratio[1])), hflip=float(flips[0]) if flips else 0.0,
                   interpolation=_INTERP[c.interpolation], antialias=bool(c.antialias))


def build_train_pipeline(source: Callable[[], Sequence[np.ndarray]], spec: CropSpec, batch_size: int,
                         num_threads: int, device_id: int | None, seed: int, prefetch: int = 2,
                         hw_decoder_load: float = 0.65) -> Any:
    """A built DALI pipeline: encoded files from ``source`` -> (B, 3, H, W) uint8 crops.

    Args:
        source: called once per batch from the thread that runs the pipeline; returns
            ``batch_size`` 1-D uint8 arrays (the encoded files); raises StopIteration at the end.
        spec: the crop and flip.
        batch_size: images per batch.
        num_threads: DALI's CPU threads.
        device_id: CUDA device (``mixed`` decoder and GPU resize; output on that GPU), or
            ``None``: everything on the CPU (DALI's CPU mode).
        seed: seed of DALI's random generators (crop windows, flips).
        prefetch: batches DALI prepares ahead.
        hw_decoder_load: share of JPEGs for the hardware decoder (A100 / H100; ``mixed`` only).
    """
    dali = import_dali()
    fn, types = dali.fn, dali.types
    pipe = dali.Pipeline(batch_size=batch_size, num_threads=num_threads, device_id=device_id, seed=seed,
                         prefetch_queue_depth=prefetch)
    gpu = device_id is not None
    decode_kw: dict[str, Any] = (dict(device="mixed", hw_decoder_load=hw_decoder_load, jpeg_fancy_upsampling=True)
                                 if gpu else dict(device="cpu"))
    with pipe:
        encoded = fn.external_source(source=source, batch=True, dtype=types.UINT8, ndim=1, name="encoded")
        img = fn.decoders.image_random_crop(encoded, output_type=types.RGB, random_area=list(spec.scale),
                                            random_aspect_ratio=list(spec.ratio), num_attempts=10, **decode_kw)
        img = fn.resize(img, resize_x=spec.size[1], resize_y=spec.size[0],
                        interp_type=getattr(types, spec.interpolation), antialias=spec.antialias)
        mirror = fn.random.coin_flip(probability=spec.hflip) if spec.hflip > 0 else 0
        pipe.set_outputs(fn.crop_mirror_normalize(img, dtype=types.UINT8, output_layout="CHW", mirror=mirror))
    pipe.build()
    return pipe


class DecodeChecker:
    """Which files DALI's decoder (on the pipeline's device) cannot decode: one file per run.

    Used after a batch failed, to find the corrupt file(s) in it; built on first use.
    """

    def __init__(self, device_id: int | None) -> None:
        self.device_id = device_id
        self._pipe: Any = None
        self._next: list[np.ndarray] = []

    def _build(self) -> Any:
        dali = import_dali()
        fn, types = dali.fn, dali.types
        pipe = dali.Pipeline(batch_size=1, num_threads=1, device_id=self.device_id, prefetch_queue_depth=1)
        with pipe:
            encoded = fn.external_source(source=lambda: [self._next.pop()], batch=True, dtype=types.UINT8, ndim=1)
            pipe.set_outputs(fn.decoders.image(encoded, device="cpu" if self.device_id is None else "mixed",
                                               output_type=types.RGB))
        pipe.build()
        return pipe

    def error(self, encoded: np.ndarray) -> str | None:
        """DALI's error for this encoded file (its gist), or None when it decodes."""
        if self._pipe is None:
            self._pipe = self._build()
        self._next = [encoded]
        try:
            self._pipe.run()
        except RuntimeError as e:
            self._pipe = None  # DALI may declare the pipeline invalid after an error: a fresh one next time
            return dali_error_gist(e)
        return None


def dali_error_gist(err: BaseException) -> str:
    """The lines of a DALI pipeline error that say what went wrong (after ``encountered:``)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    if "encountered:" in lines:
        lines = lines[lines.index("encountered:") + 1:]
    lines = [ln for ln in lines if not ln.startswith(("Current pipeline object", "Critical error in pipeline"))]
    return " ".join(lines) or type(err).__name__
