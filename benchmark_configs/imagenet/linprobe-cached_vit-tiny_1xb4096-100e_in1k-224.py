# ImageNet-1K linear probe, fast cached protocol: features of centre crops extracted once (see
# _base_/datasets/imagenet_features_centre-crop-224.py), then MAE's head (BatchNorm1d(affine=False,
# eps=1e-6) + Linear, LARS, blr 0.1, 10 warm-up epochs + cosine) trained on the cache, 100 epochs,
# batch 4096 on one process.
_base_ = ['./_base_/default_runtime.py', './_base_/datasets/imagenet_features_centre-crop-224.py']
task = 'imagenet-linear-cached'
protocol_name = 'linear probe, cached centre-crop features (LARS, 100 epochs)'
gpus = 1
model = dict(type='LinearProbe', student=None, feature_dim=None,  # the task sets the student's width
             num_classes=1000, bn=True)
train_dataloader = dict(batch_size=4096, num_workers=0, sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
                        collate_fn=dict(type='default_collate'), dataset=dict(type='FeatureDataset', cache_dir=None))
# The schedule in epochs; the values below it are what it gives on 1 x 4096 features.
schedule = dict(epochs=100, warmup_epochs=10, num_train_images=1281167, base_lr=0.1, base_batch=256, min_lr=0.0)
# at 1 x 4096: 313 iterations per epoch, lr 0.1 x 4096 / 256
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=31300)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='TimmLars', lr=1.6, momentum=0.9, trust_coeff=0.001, weight_decay=0.0),
    constructor='TimmParamGroupsConstructor', paramwise_cfg=dict(mode='mae_lars'))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=3130),  # warm-up: 10 epochs
    dict(type='CosineAnnealingLR', by_epoch=False, begin=3130, end=31300, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(interval=313))  # every epoch
