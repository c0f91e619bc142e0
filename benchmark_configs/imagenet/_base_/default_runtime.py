# The runtime of the ImageNet protocol configs (mmengine's Runner, as every protocol of this project).
# The protocols' parts are registered by `transfer.imagenet` (models, datasets, TopKAccuracy, the
# optimizer constructor), the resumable loop / sampler / per-sample seeds by `comad.engine`, the
# exact-resume hook by `transfer.resume`.
custom_imports = dict(imports=['comad.engine', 'transfer.imagenet', 'transfer.resume'], allow_failed_imports=False)
default_scope = None
name = None            # student name in the tables; None: from the student path
gpus = 8               # the GPU count the written schedule (iterations, lr) is for; others are derived
accumulation = 1       # micro-batches per optimizer step
default_hooks = dict(
    runtime_info=dict(type='RuntimeInfoHook'),
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # every epoch (the interval in iterations is set per config and derived with the schedule)
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=2, save_last=True,
                    backend_args=dict(backend='atomic_local')),
    sampler_seed=dict(type='DistSamplerSeedHook'),
)
custom_hooks = [dict(type='ExactResumeHook')]
env_cfg = dict(cudnn_benchmark=True, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='nccl'))
visualizer = dict(type='Visualizer', vis_backends=[dict(type='LocalVisBackend')])
log_processor = dict(by_epoch=False, window_size=50)
log_level = 'INFO'
randomness = dict(seed=0, diff_rank_seed=False, deterministic=False)
load_from = None
resume = True          # continue from the newest <work_dir>/iter_N.pth of the same run
