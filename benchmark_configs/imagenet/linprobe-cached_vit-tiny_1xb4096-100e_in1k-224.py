# ImageNet-1K linear probe, fast cached protocol: features of centre crops extracted once
# (see _base_/feature_cache_in1k-224.py), then the MAE head (BatchNorm1d(affine=False,
# eps=1e-6) + Linear, LARS) trained on the cache, 100 epochs, batch 4096 on one process.
_base_ = ['./_base_/feature_cache_in1k-224.py', './_base_/mae_linear_head.py']
task = 'imagenet-linear-cached'
protocol_name = 'linear probe, cached centre-crop features (LARS, 100 epochs)'
batch_size = 4096
epochs = 100
