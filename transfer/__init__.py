"""Dense-prediction transfer of the CoMAD student (MMSeg UperNet on ADE20K, MMDet Mask R-CNN on COCO).

Importing the package registers the backbone :class:`~transfer.backbone.ComadMAEViT`, the necks of
:mod:`transfer.necks` and, where mmseg is installed, DINOv2's linear head
:class:`~transfer.heads.BNHead` in mmengine's root ``MODELS`` registry; the benchmark configs pull
it in with ``custom_imports=dict(imports=['transfer'])``. ``python -m transfer.run``
(``tools/run_transfer.sh``) trains and evaluates the benchmark tasks; the ImageNet ones need no
OpenMMLab package beyond mmengine.
"""
from .backbone import ComadMAEViT, to_student_key
from .necks import LN2d, SimpleFeaturePyramid, SimpleFPN, TinyMIMPyramid

try:  # BNHead subclasses mmseg's decode head: registered with mmseg only (every dense task needs mmseg)
    from .heads import BNHead
except ModuleNotFoundError as e:
    if e.name is None or not e.name.startswith(("mmseg", "mmcv")):
        raise

__all__ = ["BNHead", "ComadMAEViT", "LN2d", "SimpleFeaturePyramid", "SimpleFPN", "TinyMIMPyramid", "to_student_key"]
