# The 100-epoch short schedule (the ablations inherit it).
_base_ = ['./comad_vit-tiny_8xb512-300e_in1k-224.py']
schedule = dict(epochs=100, warmup_epochs=5)
# what it gives at 8 x 512 (313 iterations per epoch; see _base_/default_runtime.py)
train_cfg = dict(max_iters=31300)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=1565),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=1565, end=31300, eta_min=0.0),
]
