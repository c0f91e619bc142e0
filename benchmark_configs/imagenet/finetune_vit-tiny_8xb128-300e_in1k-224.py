# ImageNet-1K end-to-end fine-tune of a ViT-Tiny student, 300 epochs (docs/method.md §4; the protocol
# behind CoMAD's 75.4). MAE/BEiT recipe: AdamW (betas 0.9/0.999, wd 0.05), layer decay 0.75, blr 5e-4
# (lr = blr x effective batch / 256), 5 warm-up epochs from 1e-6 then cosine to 1e-6, RandAugment m9,
# random erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1, drop path 0.1, mean pooling +
# fc_norm (MAE's global pool), bf16 autocast on GPUs. 8 GPUs x 128 = 1024 images per step.
# Model EMA: add dict(type='EMAHook', momentum=1e-4) to custom_hooks (then every evaluation is the EMA's).
_base_ = ['./_base_/default_runtime.py', './_base_/datasets/imagenet_bs128_timm-randaug-224.py']
task = 'imagenet-ft'
protocol_name = 'finetune MAE/BEiT recipe, 300 epochs'
model = dict(type='ViTClassifier', student=None,  # the task sets the student file
             num_classes=1000, img_size=224, pooling='mean', drop_path_rate=0.1, head_init_std=2e-5,
             mixup=dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch',
                        label_smoothing=0.1))
# The schedule in epochs. The values below it (lr, iterations, scheduler bounds, checkpoint and
# validation intervals) are what it gives on `gpus` x 128 images of the 1,281,167 training images:
# the config on disk is that run. On another GPU count, accumulation or training set the task derives
# them again from `schedule` (comad.engine.schedule, as the distillation does), writes the config it
# runs into the work dir (mmengine's dump) and names it in the log.
schedule = dict(epochs=300, warmup_epochs=5, num_train_images=1281167, base_lr=5e-4, base_batch=256, min_lr=1e-6)
# at 8 x 128: effective batch 1024, 1252 iterations per epoch, lr 5e-4 x 1024 / 256
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=375600, val_interval=12520)  # validate every 10 epochs
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16',  # fp32 where there is no CUDA device (the run record says so)
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='TimmParamGroupsConstructor', paramwise_cfg=dict(mode='layer_decay', layer_decay=0.75),
    clip_grad=None)
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-4, by_epoch=False, begin=0, end=6260),  # warm-up from 1e-6: 5 epochs
    dict(type='CosineAnnealingLR', by_epoch=False, begin=6260, end=375600, eta_min_ratio=1e-6 / (5e-4 * 1024 / 256)),  # to 1e-6 x each group's lr scale
]
default_hooks = dict(checkpoint=dict(interval=1252))  # every epoch
