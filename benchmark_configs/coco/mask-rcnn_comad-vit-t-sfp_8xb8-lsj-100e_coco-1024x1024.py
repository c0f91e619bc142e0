# Mask R-CNN + FPN on a ViTDet simple feature pyramid of CoMAD ViT-T, COCO, ViTDet-style
# large-scale jitter (1024x1024, scale 0.1-2.0) for 100 epochs (mmdet common/lsj-100e: 25
# epochs over a 4x repeated set), 8 GPUs x 8 images = 64, AdamW + layer decay 0.7.
_base_ = [
    'mmdet::common/lsj-100e_coco-instance.py',
    '../_base_/models/mask-rcnn_comad-vit-t-sfp.py',
]
image_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(img_size=image_size))
train_dataloader = dict(batch_size=8, num_workers=4)
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1),
    constructor='mmseg.LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_type='layer_wise', decay_rate=0.7, num_layers=12))
auto_scale_lr = dict(enable=False, base_batch_size=64)

# with the shared entries of ../_base_/models/mask-rcnn_comad-vit-t-sfp.py
protocol = dict(
    task='coco-lsj',
    framework='mmdet 3.3.0',
    schedule='ViTDet LSJ 100 epochs (mmdet common/lsj-100e: RepeatDataset x4, 25 epochs, steps at 22 and 24)',
    gpus=8, batch_per_gpu=8, grad_accumulation=1, effective_batch=64,
    optimizer='AdamW (betas 0.9/0.999)', lr=1e-4, weight_decay=0.1, layer_decay=0.7, drop_path=0.1,
    lr_schedule='linear warm-up 500 iterations from 0.067x, steps x0.1 at (repeated) epochs 22 and 24',
    train_scale='LSJ: RandomResize 1024x1024 ratio 0.1-2.0, RandomCrop 1024x1024, flip, padded to 1024x1024',
    inference='whole, Resize 1024x1024 keep ratio',
    pos_embed='student 14x14 grid resampled bicubic to 64x64 at load and to each input grid in forward; '
              'global attention in every block (no windows, no relative positions)',
)
