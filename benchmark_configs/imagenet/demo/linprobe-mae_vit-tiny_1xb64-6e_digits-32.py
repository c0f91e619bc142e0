# The demo form of ../linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py (`tools/run_transfer.sh --demo
# imagenet-linear`): the MAE linear probe on 32 px digits (../_base_/demo_data.py, 10 classes), a 500-image
# class-balanced subset, 6 epochs (48 iterations) of 64 images on one process, so a larger LARS lr
# (blr 100: lr 100 x 64 / 256 = 25) than the recipe's (6.4); no loader workers.
_base_ = ['../linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py', '../_base_/demo_data.py']
gpus = 1
model = dict(num_classes=10, img_size=32)
schedule = dict(epochs=6, warmup_epochs=1, num_train_images=500, base_lr=100.0)
# at 1 x 64: 8 iterations per epoch
train_cfg = dict(max_iters=48)
optim_wrapper = dict(optimizer=dict(lr=25.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=8),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=8, end=48, eta_min=0.0),
]
default_hooks = dict(checkpoint=dict(interval=8), logger=dict(interval=5))
log_processor = dict(window_size=5)
train_dataloader = dict(batch_size=64, num_workers=0, persistent_workers=False, dataset=dict(dataset=dict(
    num_samples=500, dataset=dict(transform=dict(input_size=32)))))
test_dataloader = dict(batch_size=64, num_workers=0, persistent_workers=False, dataset=dict(transform=dict(input_size=32)))
