# The demo form of ../mask-rcnn_comad-vit-t-vitdet_8xb8-lsj-100e_coco-1024x1024.py (`tools/run_transfer.sh
# --demo coco-lsj`, on the demo set of transfer/mm_demo_data.py): ViTDet's recipe with every image size x 1/4
# (large-scale jitter to 256x256, the test image padded to 256x256), 120 iterations of 2 images on one
# process, lr x 2 (as the 1x demo), the warm-up (15 iterations) and the steps compressed to 120 iterations,
# fewer proposals, sampled RoIs and detections than COCO's 1000 / 512 / 100 (the demo images hold 1-20
# objects), no loader workers, one test at the end.
# tests/test_demo_configs.py checks that nothing else differs from the benchmark config.
_base_ = ['../mask-rcnn_comad-vit-t-vitdet_8xb8-lsj-100e_coco-1024x1024.py']
image_size = (256, 256)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
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
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
model = dict(
    data_preprocessor=dict(batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]),
    backbone=dict(img_size=image_size),
    train_cfg=dict(rpn_proposal=dict(nms_pre=400, max_per_img=200), rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=400, max_per_img=200), rcnn=dict(max_per_img=30, score_thr=0.0)))
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
val_dataloader = None
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))
val_evaluator = None
val_cfg = None
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=15),
    dict(type='MultiStepLR', begin=0, end=120, by_epoch=False, milestones=[107, 116], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=120, val_interval=121)
default_hooks = dict(checkpoint=dict(_delete_=True, type='CheckpointHook', by_epoch=False, interval=120, max_keep_ckpts=1),
                     logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=False)
