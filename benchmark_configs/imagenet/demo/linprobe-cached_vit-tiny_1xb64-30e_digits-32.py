# The demo form of ../linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py (`tools/run_transfer.sh --demo
# imagenet-linear-cached`): features of 32 px digits (../_base_/demo_data.py, 10 classes) cached in small
# chunks, then MAE's head for 30 epochs of 64 features, so a larger LARS lr (blr 100: lr 25) than the
# recipe's (1.6); no loader workers.
_base_ = ['../linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py', '../_base_/demo_data.py']
model = dict(num_classes=10)
features = dict(img_size=32, batch_size=64, chunk_size=512, num_workers=0)
schedule = dict(epochs=30, warmup_epochs=1, num_train_images=1437, base_lr=100.0)
# at 1 x 64: 23 iterations per epoch over the 1,437 training digits
train_cfg = dict(max_iters=690)
optim_wrapper = dict(optimizer=dict(lr=25.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=23),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=23, end=690, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(interval=230), logger=dict(interval=5))  # every 10 epochs
log_processor = dict(window_size=5)
train_dataloader = dict(batch_size=64)
