# ImageNet-1K end-to-end fine-tune of a ViT-Tiny student, 300 epochs (docs/method.md §4; the protocol
# behind CoMAD's 75.4). MAE/BEiT recipe: AdamW, layer decay 0.75, RandAugment m9, random
# erasing 0.25, mixup 0.8 / cutmix 1.0, label smoothing 0.1, drop path 0.1, mean pooling +
# fc_norm (MAE's global_pool). Effective batch 8 GPUs x 128 = 1024; lr = blr * 1024 / 256.
_base_ = ['./_base_/default_runtime.py']
task = 'imagenet-ft'
protocol_name = 'finetune MAE/BEiT recipe, 300 epochs'
num_gpus = 8
batch_size = 128           # per GPU
accum_iter = 1
epochs = 300
warmup_epochs = 5
warmup_lr = 1e-6
blr = 5e-4
min_lr = 1e-6
weight_decay = 0.05
betas = (0.9, 0.999)
layer_decay = 0.75
drop_path = 0.1
clip_grad = None
img_size = 224
pooling = 'mean'           # 'mean' (avg + fresh fc_norm, MAE) or 'cls' (CLS token + the student's norm)
head_init_std = 2e-5
aug = dict(auto_augment='rand-m9-mstd0.5-inc1', color_jitter=None, re_prob=0.25, re_mode='pixel', re_count=1,
           scale=(0.08, 1.0), interpolation='bicubic', crop_pct=0.875)
mixup = dict(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0, switch_prob=0.5, mode='batch', label_smoothing=0.1)
model_ema = dict(enable=False, decay=0.9999)
checkpoint_interval = 1    # epochs
eval_interval = 10         # epochs (0: only at the end)
