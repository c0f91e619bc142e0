# ViTDet's COCO recipe (mmdetection projects/ViTDet: vitdet_mask-rcnn_vit-b-mae_lsj-100e.py on
# lsj-100e_coco-instance.py) at the student's width: large-scale jitter 1024x1024 (scale 0.1-2.0,
# padded with 114), 184,375 iterations at batch 64 (100 epochs), AdamW lr 1e-4, weight decay 0.1,
# layer decay 0.7, AMP, warm-up 250 iterations from 0.001x, steps x0.1 at 88 and 96 epochs; the
# test image resized to 1024 and PADDED to 1024x1024 (the grid the model trained on).
_base_ = [
    '../_base_/models/mask-rcnn_comad-vit-t-vitdet.py',
    'mmdet::_base_/default_runtime.py',
]
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
image_size = (1024, 1024)
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size, recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1e-2, 1e-2)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=4, persistent_workers=True, sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_train2017.json',
                 data_prefix=dict(img='train2017/'), filter_cfg=dict(filter_empty_gt=True, min_size=32),
                 pipeline=train_pipeline, backend_args=backend_args))
val_dataloader = dict(
    batch_size=1, num_workers=2, persistent_workers=True, drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(type=dataset_type, data_root=data_root, ann_file='annotations/instances_val2017.json',
                 data_prefix=dict(img='val2017/'), test_mode=True, pipeline=test_pipeline, backend_args=backend_args))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoMetric', ann_file=data_root + 'annotations/instances_val2017.json',
                     metric=['bbox', 'segm'], format_only=False, backend_args=backend_args)
test_evaluator = val_evaluator

optim_wrapper = dict(
    type='AmpOptimWrapper',
    constructor='mmseg.LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_type='layer_wise', decay_rate=0.7, num_layers=12),
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.1))
max_iters = 184375  # 100 epochs = 184375 iterations x 64 images / 118000 images per epoch
interval = 5000
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False, milestones=[163889, 177546], gamma=0.1),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=interval,
                 dynamic_intervals=[(max_iters // interval * interval + 1, max_iters)])
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, save_last=True, interval=interval, max_keep_ckpts=5))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=64)

# Read by transfer.run (metrics JSON) and the table maker; tests pin it against ViTDet's values.
# Not taken from ViTDet: its Fp16CompresssionHook (fp16 gradient all-reduce: communication only).
protocol = dict(
    task='coco-lsj',
    recipe='ViTDet (mmdet projects/ViTDet, vitdet_mask-rcnn_vit-b-mae_lsj-100e) at the student width',
    framework='mmdet 3.3.0',
    algorithm='Mask R-CNN, ViTDet heads: RPN 2 convs, Shared4Conv1FC box head + mask head with LN',
    schedule='ViTDet LSJ 100 epochs (184375 iterations at batch 64)',
    gpus=8, batch_per_gpu=8, grad_accumulation=1, effective_batch=64,
    optimizer='AdamW (betas 0.9/0.999)', lr=1e-4, weight_decay=0.1, layer_decay=0.7, drop_path=0.1,
    lr_schedule='linear warm-up 250 iterations from 0.001x, steps x0.1 at iterations 163889 and 177546',
    train_scale='LSJ: RandomResize 1024x1024 ratio 0.1-2.0, RandomCrop 1024x1024, flip, Pad 1024x1024 (114)',
    inference='whole, Resize 1024x1024 keep ratio, Pad 1024x1024 (114)',
    test_scales='single-scale, no flip',
    pyramid_blocks=(11, ),
    pyramid='ViTDet SimpleFPN from block 11: ConvT-LN-GELU-ConvT (x4, C/4), ConvT (x2, C/2), identity, '
            'max-pool; 1x1 + 3x3 conv with LN to 256 ch each; P6 by stride-2 subsampling; no top-down path',
    attention='14x14 windows in blocks 0,1,3,4,6,7,9,10, global in 2,5,8,11; decomposed relative positions '
              '(zero init); no CLS token',
    final_norm='none (the student file\'s final norm is dropped at load)',
    pos_embed='student 14x14 grid resampled plain bicubic to 64x64 at load (CLS slot dropped)',
    precision='AMP (fp16, dynamic loss scale)',
    metrics=('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l',
             'segm_mAP', 'segm_mAP_50', 'segm_mAP_75', 'segm_mAP_s', 'segm_mAP_m', 'segm_mAP_l'),
    width_fields=('model.neck.backbone_channel', 'model.neck.in_channels'),
    depth_fields=dict(num_layers='optim_wrapper.paramwise_cfg.num_layers'),
)
