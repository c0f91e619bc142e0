# The demo form of ../finetune_vit-tiny_8xb128-300e_in1k-224.py (`tools/run_transfer.sh --demo imagenet-ft`):
# the same recipe on 32 px digits (../_base_/demo_data.py, 10 classes), a 500-image class-balanced subset,
# 2 epochs (32 iterations) of 32 images on one process, a larger blr so that the few steps move the
# weights, no loader workers, no validation during training (one test at the end).
_base_ = ['../finetune_vit-tiny_8xb128-300e_in1k-224.py', '../_base_/demo_data.py']
gpus = 1
model = dict(num_classes=10, img_size=32)
schedule = dict(epochs=2, warmup_epochs=1, num_train_images=500, base_lr=4e-3)
# at 1 x 32: 16 iterations per epoch, lr 4e-3 x 32 / 256
train_cfg = dict(max_iters=32)
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=5e-4, by_epoch=False, begin=0, end=16),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=16, end=32, eta_min_ratio=1e-6 / (4e-3 * 32 / 256)),  # to 1e-6 x each group's lr scale
]
default_hooks = dict(checkpoint=dict(interval=16), logger=dict(interval=5))
log_processor = dict(window_size=5)
train_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False, dataset=dict(dataset=dict(
    num_samples=500, dataset=dict(transform=dict(input_size=32)))))
val_dataloader = val_cfg = val_evaluator = None
test_dataloader = dict(batch_size=32, num_workers=0, persistent_workers=False, dataset=dict(transform=dict(input_size=32)))
