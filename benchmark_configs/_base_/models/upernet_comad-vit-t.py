# UperNet on the CoMAD student (ViT-T), BEiT/MAE layout: mmseg's upernet_mae model with the
# student as backbone and mmseg's Feature2Pyramid (deconv x4, deconv x2, identity, max-pool) as
# the feature-to-pyramid neck. The pyramid keeps the backbone width (no hidden widening).
_base_ = ['mmseg::_base_/models/upernet_mae.py']
custom_imports = dict(imports=['transfer'], allow_failed_imports=False)

# The student's architecture (ViT-T). The only place the width is written: every width below
# is derived from it, and `python -m transfer.run` re-derives the fields listed in
# protocol['width_fields'] from the student file's own arch (see transfer/cfg.py).
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
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        final_norm=False,  # mmseg's MAE: no final norm (the student file's is dropped at load, and listed)
        pos_resample='bicubic',  # mmseg's MAE / BEiT: plain bicubic (timm's default would antialias)
        **student_arch),
    neck=dict(type='Feature2Pyramid', embed_dim=embed_dim, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    # mmseg's MAE recipe: the UPerHead as wide as the backbone (768 for ViT-B; the student's width here)
    decode_head=dict(in_channels=[embed_dim] * 4, channels=embed_dim, num_classes=150, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=embed_dim, in_index=2, channels=256, num_classes=150, norm_cfg=norm_cfg))
