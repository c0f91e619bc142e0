"""The ImageNet protocols' entry point to :mod:`comad.checkpoint`: a student file -> a timm ViT.

Any file the checkpoint loader reads works: ``student.safetensors`` / ``student.pth`` from
:func:`comad.export.export_student` (arch from their metadata), or another timm ViT state dict
(bare, under ``'model'`` as DeiT releases, under ``'state_dict'``, ``module.``-prefixed; e.g. a
supervised DeiT-Tiny) whose arch is inferred from the tensor shapes, ``num_heads`` being
``embed_dim // 64`` (timm's ViT convention) unless given. Classifier weights (``head.*``) of a
user checkpoint are dropped and listed; everything else is loaded strictly, and the report
lists the missing/unexpected keys (an empty list is a result too).
"""
from __future__ import annotations

from pathlib import Path

from ..checkpoint import EncoderCheckpoint, load_vit, read_encoder

__all__ = ["LoadedStudent", "read_student", "load_student"]

#: What :func:`load_student` returns: the checkpoint with ``model`` (a timm ViT) and ``report``.
LoadedStudent = EncoderCheckpoint


#: Read a student file (tensors, arch, metadata) without building a model.
read_student = read_encoder


def load_student(path: str | Path, img_size: int | None = None, num_classes: int = 0, global_pool: str = "token",
                 drop_path_rate: float = 0.0, num_heads: int | None = None) -> LoadedStudent:
    """Build a timm ViT for a student file and load its encoder weights (:func:`comad.checkpoint.load_vit`).

    Args:
        path: ``student.safetensors`` / ``student.pth`` / a timm ViT state dict.
        img_size: input size; when it differs from the student's, ``pos_embed`` is resampled
            (bicubic, ``timm.layers.resample_abs_pos_embed``) and the report says so.
        num_classes: classifier outputs (0: no head; features only).
        global_pool: 'token' (CLS; keeps the final ``norm``) or 'avg' (MAE fine-tune style: mean of
            patch tokens through a freshly initialised ``fc_norm``; the student's ``norm`` is unused).
        drop_path_rate: stochastic depth for fine-tuning.
        num_heads: heads of a user checkpoint without metadata (default ``embed_dim // 64``).

    Raises:
        CheckpointError: unreadable file, wrong arch, or keys that do not fit (named).
    """
    return load_vit(path, img_size=img_size, num_classes=num_classes, global_pool=global_pool,
                    drop_path_rate=drop_path_rate, num_heads=num_heads)
