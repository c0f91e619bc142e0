"""The dense-transfer names for reading a student: :mod:`comad.checkpoint` (one loader for all).

:func:`read_student` returns the :class:`~comad.checkpoint.EncoderCheckpoint` of any file the
loader reads (an exported CoMAD student, a timm / DeiT state dict, ...); :func:`read_student_arch`
its ``img_size, patch_size, embed_dim, depth, num_heads``.
"""
from comad.checkpoint import ARCH_KEYS, EncoderCheckpoint
from comad.checkpoint import read_arch as read_student_arch
from comad.checkpoint import read_encoder as read_student

StudentWeights = EncoderCheckpoint

__all__ = ["ARCH_KEYS", "StudentWeights", "read_student", "read_student_arch"]
