# The 100-epoch short schedule of the ImageNet-1K fine-tune (docs/method.md §4); all else as 300e.
_base_ = ['./finetune_vit-tiny_8xb128-300e_in1k-224.py']
protocol_name = 'finetune MAE/BEiT recipe, 100 epochs'
schedule = dict(epochs=100)
# at 8 x 128: 1252 iterations per epoch
train_cfg = dict(max_iters=125200)
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-4, by_epoch=False, begin=0, end=6260),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=6260, end=125200, eta_min_ratio=1e-6 / (5e-4 * 1024 / 256)),  # to 1e-6 x each group's lr scale
]
