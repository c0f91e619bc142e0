custom_imports = dict(imports=['comad.engine'], allow_failed_imports=False)
default_scope = None
# The schedule in epochs. The values below it (lr, iterations, scheduler ends) are the ones it gives
# on the config's own GPU count, `gpus` (the file name's 8xb512): the config on disk is that run.
# On another GPU count or accumulation tools/train.py derives them again from `schedule` (lr by the
# linear rule on the effective batch, iterations from the epochs), writes the config it runs into
# the work dir (mmengine's dump, named in the log) and records them in run_info.json.
schedule = dict(epochs=300, warmup_epochs=15, num_train_images=1281167, base_lr=1.5e-4, base_batch=256,
                min_lr=0.0, max_iters=None)  # max_iters: cut the run (smoke tests, demo)
gpus = 8
accumulation = 1
amp = 'auto'  # bf16 autocast when CUDA is available (ComadAmpOptimWrapper); 'off' to disable
# at 8 x 512: effective batch 4096, 313 iterations per epoch, lr 1.5e-4 x 4096 / 256
train_cfg = dict(type='ResumableIterBasedTrainLoop', max_iters=93900)
optim_wrapper = dict(
    type='ComadOptimWrapper',  # mmengine's OptimWrapper + the skipped / non-finite steps of comad.nonfinite
    optimizer=dict(type='AdamW', lr=2.4e-3, betas=(0.9, 0.95), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0,
                       custom_keys={'pos_embed': dict(decay_mult=0.0), 'cls_token': dict(decay_mult=0.0),
                                    'mask_token': dict(decay_mult=0.0)}),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=4695),  # warm-up: 15 epochs
    dict(type='CosineAnnealingLR', by_epoch=False, begin=4695, end=93900, eta_min=0.0),
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
