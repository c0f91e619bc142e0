"""Dense-prediction transfer of the CoMAD student (MMSeg UperNet on ADE20K, MMDet Mask R-CNN on COCO).

Importing the package registers :class:`~transfer.backbone.ComadMAEViT` and
:class:`~transfer.necks.SimpleFeaturePyramid` in mmengine's root ``MODELS`` registry; the
benchmark configs pull it in with ``custom_imports=dict(imports=['transfer'])``.
``python -m transfer.run`` (``tools/run_transfer.sh``) trains and evaluates the benchmark tasks.
"""
from .backbone import ComadMAEViT, to_student_key
from .heads import BNHead
from .necks import LN2d, SimpleFeaturePyramid, SimpleFPN, TinyMIMPyramid

__all__ = ["BNHead", "ComadMAEViT", "LN2d", "SimpleFeaturePyramid", "SimpleFPN", "TinyMIMPyramid", "to_student_key"]
