# UperNet + CoMAD ViT-T on ADE20K: 512x512 crops, 160k iterations, 8 GPUs x 2 images,
# AdamW with layer decay 0.65, single-scale mIoU (slide inference). The MAE/BEiT mmseg protocol
# (mmseg configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py) at ViT-T width, key by key:
# the UPerHead as wide as the backbone, no final norm, the position embedding resampled plain
# bicubic; fp32 (that config's `fp16 = dict(...)` is a key mmengine's Runner does not read).
_base_ = [
    '../_base_/models/upernet_comad-vit-t.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/adamw-ld0.65_poly-160k.py',
]
crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=16000, max_keep_ckpts=2))

# Read by transfer.run (metrics JSON) and the table maker; tests check it against the values
# above. Widths/depths are those of ViT-T; transfer.run re-derives the *_fields from the student.
protocol = dict(
    task='ade20k',
    framework='mmseg 1.2.2',
    recipe="mmseg's MAE (mae-base_upernet_8xb2-amp-160k_ade20k-512x512) at the student width",
    algorithm='UperNet (UPerHead as wide as the backbone + FCN auxiliary head 256 ch on stride 16, loss weight 0.4)',
    schedule='mmseg 160k iterations',
    gpus=8, batch_per_gpu=2, grad_accumulation=1, effective_batch=16,
    optimizer='AdamW (betas 0.9/0.999)', lr=1e-4, weight_decay=0.05, layer_decay=0.65, drop_path=0.1,
    lr_schedule='linear warm-up 1500 iterations from 1e-6, then poly (power 1.0) to 0',
    train_scale='RandomResize (2048, 512) ratio 0.5-2.0, RandomCrop 512x512 (cat_max_ratio 0.75), flip, '
                'photometric distortion',
    inference='slide, crop 512x512, stride 341x341',
    test_scales='single-scale (short side 512), no flip',
    pyramid_blocks=(3, 5, 7, 11),
    pyramid='mmseg Feature2Pyramid: ConvT-BN-GELU-ConvT (x4), ConvT (x2), identity, max-pool (x0.5); '
            'backbone width at every stride',
    final_norm='none (as mmseg MAE; the student file\'s final norm is dropped at load)',
    pos_embed='student 14x14 grid resampled plain bicubic (no antialias, as mmseg MAE) to 32x32 at load, CLS slot kept',
    precision='fp32',
    metrics=('mIoU', 'aAcc', 'mAcc'),
    width_fields=('model.neck.embed_dim', 'model.decode_head.in_channels', 'model.decode_head.channels',
                  'model.auxiliary_head.in_channels'),
    depth_fields=dict(out_indices='model.backbone.out_indices', num_layers='optim_wrapper.paramwise_cfg.num_layers'),
)
