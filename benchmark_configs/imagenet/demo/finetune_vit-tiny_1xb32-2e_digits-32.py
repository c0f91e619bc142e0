# The demo form of ../finetune_vit-tiny_8xb128-300e_in1k-224.py (`tools/run_transfer.sh --demo imagenet-ft`):
# the same recipe on 32 px digits (../_base_/demo_data.py), a 500-image class-balanced subset, 2 epochs
# (30 steps) of 32 images on one process, a larger blr so that the few steps move the weights, fp32,
# no loader workers, one evaluation at the end.
_base_ = ['../finetune_vit-tiny_8xb128-300e_in1k-224.py', '../_base_/demo_data.py']
num_gpus = 1
img_size = 32
batch_size = 32
epochs = 2
warmup_epochs = 1
blr = 4e-3
train_subset = 500
num_workers = 0
amp = None
eval_interval = 0
log_interval = 5
