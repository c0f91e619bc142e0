# ImageNet-1K linear probe, MAE protocol (He et al. 2022, main_linprobe.py): frozen student,
# CLS token of the final norm, BatchNorm1d(affine=False, eps=1e-6) + Linear, LARS (momentum
# 0.9, trust 0.001, wd 0), blr 0.1 (lr = 0.1 * 16384 / 256 = 6.4), 10 warm-up epochs + cosine,
# 90 epochs, online on RandomResizedCrop + flip; eval resize 256 / centre crop 224.
_base_ = ['./_base_/default_runtime.py', './_base_/mae_linear_head.py']
task = 'imagenet-linear'
protocol_name = 'linear probe, MAE protocol (online, LARS, 90 epochs)'
num_gpus = 8
batch_size = 2048          # per GPU
epochs = 90
pooling = 'cls'
img_size = 224
crop_pct = 0.875
train_aug = dict(scale=(0.08, 1.0), hflip=0.5)   # None: train on centre crops
