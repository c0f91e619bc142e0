# Mask R-CNN on the CoMAD student (ViT-T): mmdet's mask-rcnn_r50_fpn heads; the backbone's last
# block feeds a ViTDet simple feature pyramid (strides 4/8/16/32 with C/4, C/2, C, C channels),
# followed by mmdet's FPN (256 channels, P2-P6).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
# mmseg.engine.optimizers: the layer-decay constructor (mmdet's own only knows ConvNeXt).
custom_imports = dict(imports=['transfer', 'mmseg.engine.optimizers'], allow_failed_imports=False)

# The student's architecture (ViT-T): the only place the width is written (see the UperNet base).
student_arch = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
embed_dim = student_arch['embed_dim']
model = dict(
    backbone=dict(
        _delete_=True,
        type='ComadMAEViT',
        student=None,  # set by transfer.run (--student) or --cfg-options model.backbone.student=PATH
        img_size=(1024, 1024),
        mlp_ratio=4.0,
        out_indices=(-1, ),
        drop_path_rate=0.1,
        final_norm=True,
        **student_arch),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=embed_dim, scale_factors=(4.0, 2.0, 1.0, 0.5)),
        dict(type='FPN', in_channels=[embed_dim // 4, embed_dim // 2, embed_dim, embed_dim], out_channels=256,
             num_outs=5),
    ])
