"""Checkpoint -> encoder: the one loader for teachers, students and baselines.

- :mod:`.read`: safe reading (safetensors, or ``torch.load(weights_only=True)`` + allow-list).
- :mod:`.layouts`: the layout table (MAE, MoCo v3, iBOT, DeiT, timm, DDP, the exported CoMAD
  student) and the conversion of each to timm key names.
- :mod:`.vit`: the ViT family: architecture from shapes / metadata, heads, builder, and the
  position-embedding resampling every caller uses.
- :mod:`.cnn`: the CNN family (torchvision MobileNetV2, timm EfficientNet-Lite0 read at stride 16).
- :mod:`.content`: a file's identity by its content (:func:`content_sha256`).
- :mod:`.load`: :class:`EncoderCheckpoint` (the one result type), :func:`read_encoder`,
  :func:`load_vit`, :func:`load_strict`.

Typical use::

    ckpt = load_vit("deit_tiny_patch16_224-a1311bcf.pth", img_size=224)
    ckpt.model, ckpt.arch, ckpt.arch_source, ckpt.report["dropped_keys"]
"""
from .cnn import CNN_STRIDE, CnnNet, build_cnn
from .content import canonical_metadata, content_sha256
from .layouts import FORMATS, LAYOUTS, Layout, convert_state_dict, detect_format, extract_encoder, get_layout, resolve_encoder
from .load import (FAMILIES, EncoderCheckpoint, Family, check_finite, load_strict, load_vit, read_arch, read_encoder,
                   require_vit)
from .read import file_metadata, read_checkpoint
from .vit import (ARCH_KEYS, ARCH_PRESETS, POS_INTERPOLATION, build_vit, check_arch, expected_arch, infer_arch,
                  resample_pos_embed, resolve_num_heads)

__all__ = [
    "ARCH_KEYS", "ARCH_PRESETS", "CNN_STRIDE", "FAMILIES", "FORMATS", "LAYOUTS", "POS_INTERPOLATION",
    "CnnNet", "EncoderCheckpoint", "Family", "Layout",
    "build_cnn", "build_vit", "canonical_metadata", "check_arch", "check_finite", "content_sha256", "convert_state_dict",
    "detect_format", "expected_arch", "extract_encoder",
    "file_metadata", "get_layout", "infer_arch", "load_strict", "load_vit", "read_arch", "read_checkpoint",
    "read_encoder", "require_vit",
    "resample_pos_embed", "resolve_encoder", "resolve_num_heads",
]
