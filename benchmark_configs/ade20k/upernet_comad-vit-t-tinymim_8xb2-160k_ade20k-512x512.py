# TinyMIM's ViT-T UperNet recipe (OliverRensu/TinyMIM, Segmentation/TinyMIMstar-T,
# upernet_mae_tiny_12_512_slide_160k_ade20k.py: the recipe behind TinyMIM's 44.0 / 45.0 mIoU), so a
# CoMAD row can sit beside TinyMIM's under one recipe: the pyramid widened to 4 x the student's width
# (768 for ViT-T; TinyMIM's fpn1-fpn4, TinyMIMPyramid), UPerHead and FCN auxiliary head 768 wide, layer
# decay 0.8, AdamW lr 1e-4, weight decay 0.05, linear warm-up 1500 iterations from 1e-6 then poly,
# 160k iterations at batch 16, AMP, slide inference 512/341. Not reproduced (stated in `protocol`):
# TinyMIM*-T's per-block relative position bias, its layer scale and its distillation token, which are
# parts of its own architecture that the CoMAD student does not have.
_base_ = ['./upernet_comad-vit-t_8xb2-160k_ade20k-512x512.py']
width = 4 * 192  # TinyMIM: the decoder as wide as TinyMIM-B's (C = 768); 4 x the student's width
model = dict(
    neck=dict(_delete_=True, type='TinyMIMPyramid', embed_dim=192, width_factor=4, last_hidden=1280,
              norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=[width] * 4, channels=width),
    auxiliary_head=dict(in_channels=width))
optim_wrapper = dict(type='AmpOptimWrapper', paramwise_cfg=dict(decay_rate=0.8))
protocol = dict(
    task='ade20k-tinymim',
    recipe="TinyMIM's ViT-T UperNet (upernet_mae_tiny_12_512_slide_160k_ade20k) at the student width",
    algorithm='UperNet (UPerHead 4C + FCN auxiliary head on the 4C stride-16 map, loss weight 0.4) on TinyMIM\'s '
              'pyramid widened to 4C',
    layer_decay=0.8,
    pyramid="TinyMIM fpn1-fpn4: ConvT-SyncBN-GELU-ConvT (x4), ConvT (x2), conv1x1, LN-Linear(1280)-GELU then "
            "conv3x3 stride 2 (x0.5); all 4C wide",
    precision='AMP (fp16, dynamic loss scale)',
    not_reproduced='TinyMIM*-T relative position bias per block, layer scale (init 1.0), distillation token',
    width_fields=('model.neck.embed_dim', 'model.decode_head.in_channels', 'model.decode_head.channels',
                  'model.auxiliary_head.in_channels'),
)
