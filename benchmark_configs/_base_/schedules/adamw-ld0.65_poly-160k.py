# mmseg 160k iteration schedule with the MAE/BEiT ADE20K optimiser: AdamW (lr 1e-4, wd 0.05),
# layer-wise lr decay 0.65 (mmseg's LearningRateDecayOptimizerConstructor, decay_type
# 'layer_wise': patch_embed/cls/pos -> layer 0, block i -> i+1, neck/heads -> top), linear
# warm-up 1500 iterations, then poly (power 1) to 0.
# Weight decay: every >=2-D weight, pos_embed and cls_token included (mmseg's constructor exempts
# only 1-D params and biases: it compares 'pos_embed' with the full name 'backbone.pos_embed').
_base_ = ['mmseg::_base_/schedules/schedule_160k.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_type='layer_wise', decay_rate=0.65, num_layers=12))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=1500, end=160000, by_epoch=False),
]
