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

# with the shared entries of ../_base_/models/mask-rcnn_comad-vit-t-sfp.py
protocol = dict(
    task='coco',
    framework='mmdet 3.3.0',
    schedule='mmdet 1x (12 epochs)',
    gpus=8, batch_per_gpu=2, grad_accumulation=1, effective_batch=16,
    optimizer='AdamW (betas 0.9/0.999)', lr=1e-4, weight_decay=0.05, layer_decay=0.7, drop_path=0.1,
    lr_schedule='linear warm-up 500 iterations from 0.001x, steps x0.1 at epochs 8 and 11',
    train_scale='Resize 1333x800 keep ratio, flip',
    inference='whole, Resize 1333x800 keep ratio',
    pos_embed='student 14x14 grid resampled bicubic to 64x64 at load and to each padded input grid in forward; '
              'global attention in every block (no windows, no relative positions)',
)
