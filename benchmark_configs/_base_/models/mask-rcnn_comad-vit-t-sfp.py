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
        pos_resample='bicubic-antialias',  # timm's resample (this 1x recipe is ours, not a peer's)
        **student_arch),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=embed_dim, scale_factors=(4.0, 2.0, 1.0, 0.5)),
        dict(type='FPN', in_channels=[embed_dim // 4, embed_dim // 2, embed_dim, embed_dim], out_channels=256,
             num_outs=5),
    ])

# The protocol entries both COCO configs share (each config adds its schedule, scales and
# batch); read by transfer.run and the table maker. transfer.run re-derives the *_fields from
# the student's width and depth.
protocol = dict(
    algorithm='Mask R-CNN (mmdet mask-rcnn_r50_fpn heads) + FPN on a ViTDet simple feature pyramid',
    test_scales='single-scale, no flip',
    pyramid_blocks=(11, ),
    pyramid='ViTDet simple feature pyramid from block 11 (ConvT-LN-GELU-ConvT x4 -> C/4, ConvT x2 -> C/2, '
            'identity, max-pool x0.5), then mmdet FPN 256 ch, P2-P6',
    final_norm='student final LayerNorm on block 11 output',
    precision='fp32',
    # COCO train2017 images with >= 1 instance (mmdet filter_empty_gt): sets the epoch length that
    # --max-iters uses to compress iteration-valued warm-ups of an epoch-based schedule.
    train_images=117266,
    metrics=('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l',
             'segm_mAP', 'segm_mAP_50', 'segm_mAP_75', 'segm_mAP_s', 'segm_mAP_m', 'segm_mAP_l'),
    width_fields=('model.neck.0.in_channels', 'model.neck.1.in_channels'),
    depth_fields=dict(num_layers='optim_wrapper.paramwise_cfg.num_layers'),
)
