# The demo form of ../linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py (`tools/run_transfer.sh --demo
# imagenet-linear`): the MAE linear probe on 32 px digits (../_base_/demo_data.py), a 500-image
# class-balanced subset, 6 epochs (~40 steps) of 64 images on one process, so a larger LARS lr
# (blr 100 x 64 / 256 = 25) than the recipe (6.4); fp32, no loader workers.
_base_ = ['../linprobe-mae_vit-tiny_8xb2048-90e_in1k-224.py', '../_base_/demo_data.py']
num_gpus = 1
img_size = 32
batch_size = 64
epochs = 6
warmup_epochs = 1
blr = 100.0
train_subset = 500
num_workers = 0
amp = None
log_interval = 5
