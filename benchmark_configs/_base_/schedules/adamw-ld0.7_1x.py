# mmdet 1x (12 epochs, steps at 8 and 11, linear warm-up 500 iterations) with AdamW (lr 1e-4,
# wd 0.05) and layer-wise lr decay 0.7 (ViTDet's value for 12-block ViTs). The constructor is
# mmseg's (mmdet 3.3's LearningRateDecayOptimizerConstructor only knows ConvNeXt); the
# 'mmseg.' scope prefix finds it from an mmdet config.
# Weight decay: every >=2-D weight, pos_embed and cls_token included (mmseg's constructor exempts
# only 1-D params and biases: it compares 'pos_embed' with the full name 'backbone.pos_embed').
_base_ = ['mmdet::_base_/schedules/schedule_1x.py']
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='mmseg.LearningRateDecayOptimizerConstructor',
    paramwise_cfg=dict(decay_type='layer_wise', decay_rate=0.7, num_layers=12))
