# The demo form of ../upernet_comad-vit-t_8xb2-160k_ade20k-512x512.py (`tools/run_transfer.sh --demo ade20k`,
# on the demo set of transfer/mm_demo_data.py): the same recipe with every image size x 1/4 (128x128
# crops), 40 iterations of 2 images on one process, lr x 10 (a few dozen steps of fresh heads), the
# warm-up and the poly decay compressed to 40 iterations, no loader workers, one test at the end.
# tests/test_demo_configs.py checks that nothing else differs from the benchmark config.
_base_ = ['../upernet_comad-vit-t_8xb2-160k_ade20k-512x512.py']
crop_size = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    test_cfg=dict(crop_size=crop_size, stride=(85, 85)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = None
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
val_evaluator = None
val_cfg = None
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=2),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=40, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=40, val_interval=41)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=40, max_keep_ckpts=1),
                     logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=False)
