# DINOv2's frozen linear probe on ADE20K (facebookresearch/dinov2, dinov2_vits14_ade20k_linear_config.py),
# key by key at the student's width: the backbone frozen, BatchNorm + a 1x1 classifier on the last
# block's patch tokens (after the final norm); 512x512 crops of images resized to a short side of
# 512 (x0.5-2.0), 40k iterations at batch 16, AdamW lr 1e-3, weight decay 1e-4, linear warm-up 1500
# iterations from 1e-6 then poly; single-scale slide inference (crop 512, stride 341).
_base_ = [
    '../_base_/models/linear_comad-vit-t-frozen.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
]
crop_size = (512, 512)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(99999999, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(99999999, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(batch_size=1, dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=40000, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40000, val_interval=10000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=10000, max_keep_ckpts=2))

protocol = dict(
    task='ade20k-linear',
    recipe="DINOv2's frozen linear probe (dinov2_vits14_ade20k_linear_config), last block ('lin.')",
    framework='mmseg 1.2.2',
    algorithm='frozen backbone; BatchNorm + 1x1 conv on the last block\'s patch tokens (DINOv2 BNHead)',
    schedule='40k iterations',
    gpus=8, batch_per_gpu=2, grad_accumulation=1, effective_batch=16,
    optimizer='AdamW (betas 0.9/0.999)', lr=1e-3, weight_decay=1e-4, layer_decay=1.0, drop_path=0.0,
    lr_schedule='linear warm-up 1500 iterations from 1e-6, then poly (power 1.0) to 0',
    train_scale='RandomResize short side 512 ratio 0.5-2.0, RandomCrop 512x512 (cat_max_ratio 0.75), flip, '
                'photometric distortion',
    inference='slide, crop 512x512, stride 341x341',
    test_scales='single-scale (short side 512), no flip',
    pyramid_blocks=(8, 9, 10, 11),
    head_blocks=(11, ),
    pyramid='none: the head reads the last block\'s 32x32 map (stride 16), upsampled by mmseg to the crop',
    final_norm='the student\'s final norm on every output block (DINOv2 get_intermediate_layers(norm=True))',
    frozen=True,
    pos_embed='student 14x14 grid resampled plain bicubic to 32x32 at load, CLS slot kept',
    precision='fp32',
    metrics=('mIoU', 'aAcc', 'mAcc'),
    width_fields=('model.decode_head.in_channels', 'model.decode_head.channels'),
    depth_fields=dict(last_blocks='model.backbone.out_indices'),
)
