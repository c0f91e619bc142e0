# The demo form of ../mask-rcnn_comad-vit-t-sfp_8xb2-1x_coco-1333x800.py (`tools/run_transfer.sh --demo coco`,
# on the demo set of transfer/mm_demo_data.py): the same recipe with every image size x 1/4 (333x200), 120
# iterations of 2 images on one process, lr x 2 (x10 diverges within ~40 iterations at batch 2; x4 and x1
# end lower on the demo val set: bbox mAP 0.008 / 0.016 against 0.027), the warm-up (15 iterations) and the
# steps (at 2/3 and 11/12 of the run) compressed to 120 iterations, fewer proposals, sampled RoIs and
# detections than COCO's 1000 / 512 / 100 (the demo images hold 1-20 objects; every kept box is ranked,
# COCO AP needs no score threshold), no loader workers, one test at the end.
# tests/test_demo_configs.py checks that nothing else differs from the benchmark config.
_base_ = ['../mask-rcnn_comad-vit-t-sfp_8xb2-1x_coco-1333x800.py']
backend_args = None
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=(333, 200), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(333, 200), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
model = dict(
    backbone=dict(img_size=(256, 256)),
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
    dict(type='MultiStepLR', begin=0, end=120, by_epoch=False, milestones=[80, 110], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=120, val_interval=121)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=120, max_keep_ckpts=1),
                     logger=dict(type='LoggerHook', interval=5, log_metric_by_epoch=False))
log_processor = dict(type='LogProcessor', window_size=5, by_epoch=False)
