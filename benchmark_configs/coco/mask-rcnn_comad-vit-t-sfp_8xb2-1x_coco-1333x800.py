# Mask R-CNN + FPN on a ViTDet simple feature pyramid of CoMAD ViT-T, COCO, mmdet 1x schedule
# (12 epochs), 8 GPUs x 2 images, 1333x800 single-scale training, box and mask AP (pycocotools).
_base_ = [
    '../_base_/models/mask-rcnn_comad-vit-t-sfp.py',
    'mmdet::_base_/datasets/coco_instance.py',
    '../_base_/schedules/adamw-ld0.7_1x.py',
    'mmdet::_base_/default_runtime.py',
]
train_dataloader = dict(batch_size=2)
default_hooks = dict(checkpoint=dict(interval=1, max_keep_ckpts=2))
auto_scale_lr = dict(enable=False, base_batch_size=16)

protocol = dict(
    task='coco',
    framework='mmdet 3.3.0',
    algorithm='Mask R-CNN (mmdet mask-rcnn_r50_fpn heads) + FPN on a ViTDet simple feature pyramid',
    schedule='mmdet 1x (12 epochs)',
    gpus=8, batch_per_gpu=2, grad_accumulation=1, effective_batch=16,
    optimizer='AdamW (betas 0.9/0.999)', lr=1e-4, weight_decay=0.05, layer_decay=0.7, drop_path=0.1,
    lr_schedule='linear warm-up 500 iterations from 0.001x, steps x0.1 at epochs 8 and 11',
    train_scale='Resize 1333x800 keep ratio, flip',
    inference='whole, Resize 1333x800 keep ratio',
    test_scales='single-scale, no flip',
    pyramid_blocks=(11, ),
    pyramid='ViTDet simple feature pyramid from block 11 (ConvT-LN-GELU-ConvT x4 -> C/4, ConvT x2 -> C/2, '
            'identity, max-pool x0.5), then mmdet FPN 256 ch, P2-P6',
    final_norm='student final LayerNorm on block 11 output',
    pos_embed='student 14x14 grid resampled bicubic to 64x64 at load and to each padded input grid in forward; '
              'global attention in every block (no windows, no relative positions)',
    precision='fp32',
    # COCO train2017 images with >= 1 instance (mmdet filter_empty_gt): sets the epoch length that
    # --max-iters uses to compress iteration-valued warm-ups of this epoch-based schedule.
    train_images=117266,
    metrics=('bbox_mAP', 'bbox_mAP_50', 'bbox_mAP_75', 'bbox_mAP_s', 'bbox_mAP_m', 'bbox_mAP_l',
             'segm_mAP', 'segm_mAP_50', 'segm_mAP_75', 'segm_mAP_s', 'segm_mAP_m', 'segm_mAP_l'),
    width_fields=('model.neck.0.in_channels', 'model.neck.1.in_channels'),
    depth_fields=dict(num_layers='optim_wrapper.paramwise_cfg.num_layers'),
)
