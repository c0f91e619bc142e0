"""CoMAD: consensus-oriented masked distillation (arXiv 2508.04816), reproducible.

The distillation core (``comad.masking``, ``comad.adapters``, ``comad.align``, ``comad.gating``,
``comad.losses``, ``comad.models``, ``comad.teachers``) imports with torch + timm (+ mmengine
for the distiller and runner); nothing here imports mmcv, mmseg or mmdet.
"""
__version__ = "0.1.0"
