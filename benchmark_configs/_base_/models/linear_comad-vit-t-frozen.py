# DINOv2's frozen linear segmentation probe (dinov2_vits14_ade20k_linear_config.py: BNHead on a
# frozen backbone) with the CoMAD student: every output block through the student's final norm
# (DINOv2's get_intermediate_layers(norm=True)), the backbone frozen (no gradient, eval mode,
# checked unchanged after training), BatchNorm + a 1x1 classifier on the chosen blocks' maps.
_base_ = ['mmseg::_base_/models/upernet_mae.py']
custom_imports = dict(imports=['transfer'], allow_failed_imports=False)

# The student's architecture (ViT-T): the only place the width is written.
student_arch = dict(patch_size=16, embed_dim=192, depth=12, num_heads=3)
embed_dim = student_arch['embed_dim']
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='ComadMAEViT',
        student=None,  # set by transfer.run (--student) or --cfg-options model.backbone.student=PATH
        img_size=(512, 512),
        mlp_ratio=4.0,
        out_indices=(8, 9, 10, 11),  # DINOv2's last four blocks
        drop_path_rate=0.0,
        final_norm='all',
        frozen=True,
        pos_resample='bicubic',
        **student_arch),
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='BNHead',
        in_channels=[embed_dim],
        in_index=[3],  # the last block ("lin.")
        input_transform='resize_concat',
        channels=embed_dim,
        dropout_ratio=0,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
