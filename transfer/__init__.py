"""Everything a student is evaluated on: the task layer and every task (ImageNet, ADE20K, COCO).

One package, used by ImageNet and dense tasks alike: the task table (:mod:`transfer.tasks`), the
task layer (:mod:`transfer.runner`: request -> task -> result -> ``metrics.json``, the one writer;
:mod:`transfer.metrics_io`; :mod:`transfer.tables`), the ImageNet protocols
(:mod:`transfer.imagenet`) and the dense ones on MMSeg / MMDet (:mod:`transfer.mm_runner`, the
configs' edits in :mod:`transfer.cfg`).

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
