# ViTDet's Mask R-CNN (Li et al. 2022; mmdetection projects/ViTDet,
# vitdet_mask-rcnn_vit-b-mae_lsj-100e.py) with the CoMAD student as the plain backbone, at the
# student's width: 14x14 window attention in blocks 0,1,3,4,6,7,9,10 and global attention in
# 2,5,8,11, decomposed relative positions (zero-initialised, as ViTDet adds them to MAE weights),
# no CLS token, no final norm, the position embedding resampled plain bicubic; ViTDet's simple
# feature pyramid with LayerNorm and no top-down path (SimpleFPN, 256 channels, P2-P6); RPN with
# 2 convolutions; Shared4Conv1FC box head and the mask head with LayerNorm (LN2d).
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']
# mmseg.engine.optimizers: the layer-decay constructor (mmdet's own only knows ConvNeXt).
custom_imports = dict(imports=['transfer', 'mmseg.engine.optimizers'], allow_failed_imports=False)

# The student's architecture (ViT-T): the only place the width is written.
student_arch = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
embed_dim = student_arch['embed_dim']
image_size = (1024, 1024)
norm_cfg = dict(type='LN2d', requires_grad=True)
model = dict(
    data_preprocessor=dict(pad_size_divisor=32,
                           batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(
        _delete_=True,
        type='ComadMAEViT',
        student=None,  # set by transfer.run (--student) or --cfg-options model.backbone.student=PATH
        img_size=image_size,
        mlp_ratio=4.0,
        out_indices=(-1, ),
        drop_path_rate=0.1,
        final_norm=False,
        pos_resample='bicubic',
        use_cls_token=False,
        window_size=14,
        window_block_indexes=(0, 1, 3, 4, 6, 7, 9, 10),
        use_rel_pos=True,
        **student_arch),
    neck=dict(
        _delete_=True,
        type='SimpleFPN',
        backbone_channel=embed_dim,
        in_channels=[embed_dim // 4, embed_dim // 2, embed_dim, embed_dim],
        out_channels=256,
        num_outs=5,
        norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256, norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))
