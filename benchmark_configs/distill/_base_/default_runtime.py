custom_imports = dict(imports=['comad.engine'], allow_failed_imports=False)
default_scope = None
# The schedule in epochs; tools/train.py turns it into iterations and scales the lr from the
# effective batch (GPUs x batch_size x accumulation), and records both in run_info.json.
schedule = dict(epochs=300, warmup_epochs=15, num_train_images=1281167, base_lr=1.5e-4, base_batch=256,
                min_lr=0.0, max_iters=None)  # max_iters: cut the run (smoke tests, demo)
accumulation = 1
amp = 'auto'  # bf16 autocast when CUDA is available; 'off' to disable
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=None)
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=None, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0),
                                    'mask_token': dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=None),  # warm-up
    dict(type='CosineAnnealingLR', by_epoch=False, begin=None, end=None, eta_min=0.0),
]
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2000, max_keep_ckpts=3,
                    backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='ComadRunHook', export=True, latest_pointer='work_dirs/LATEST_STUDENT')]
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
visualizer = dict(type='Visualizer', vis_backends=vis_backends)
log_processor = dict(by_epoch=False, window_size=50)
log_level = 'INFO'
randomness = dict(seed=0, diff_rank_seed=False, deterministic=False)
load_from = None
resume = False
