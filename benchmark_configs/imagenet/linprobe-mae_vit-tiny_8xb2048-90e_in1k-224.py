# ImageNet-1K linear probe, MAE protocol (He et al. 2022, main_linprobe.py): frozen student, CLS token of
# the final norm, BatchNorm1d(affine=False, eps=1e-6) + Linear, LARS (momentum 0.9, trust 0.001, wd 0;
# matrices adapted, 1-d parameters not), blr 0.1 (lr = 0.1 x 16384 / 256 = 6.4), 10 warm-up epochs +
# cosine, 90 epochs, online on RandomResizedCrop + flip; evaluated once at the end on resize 256 /
# centre crop 224. The backbone is checked unchanged after probing.
_base_ = ['./_base_/default_runtime.py', './_base_/datasets/imagenet_bs2048_rrc-224.py']
task = 'imagenet-linear'
protocol_name = 'linear probe, MAE protocol (online, LARS, 90 epochs)'
model = dict(type='LinearProbe', student=None, num_classes=1000, img_size=224, pooling='cls', bn=True)
# The schedule in epochs; the values below it are what it gives on `gpus` x 2048 images (see the
# fine-tune config: other GPU counts, accumulation or training sets are derived from it).
schedule = dict(epochs=90, warmup_epochs=10, num_train_images=1281167, base_lr=0.1, base_batch=256, min_lr=0.0)
# at 8 x 2048: effective batch 16384, 79 iterations per epoch
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=7110)
optim_wrapper = dict(
    type='AmpOptimWrapper', dtype='bfloat16',  # the frozen backbone's forward; the head runs in fp32
    optimizer=dict(type='TimmLars', lr=6.4, momentum=0.9, trust_coeff=0.001, weight_decay=0.0),
    constructor='TimmParamGroupsConstructor', paramwise_cfg=dict(mode='mae_lars'))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=790),  # warm-up: 10 epochs
    dict(type='CosineAnnealingLR', by_epoch=False, begin=790, end=7110, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(interval=79))  # every epoch
