# The demo form of ../linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py (`tools/run_transfer.sh --demo
# imagenet-linear-cached`): features of 32 px digits (../_base_/demo_data.py) cached in small chunks, then
# the MAE head for 30 epochs of 64 features, so a larger LARS lr (blr 100 x 64 / 256 = 25) than the
# recipe (1.6); fp32, no loader workers.
_base_ = ['../linprobe-cached_vit-tiny_1xb4096-100e_in1k-224.py', '../_base_/demo_data.py']
img_size = 32
extract_batch_size = 64
chunk_size = 512
num_workers = 0
amp = None
batch_size = 64
epochs = 30
warmup_epochs = 1
blr = 100.0
log_interval = 5
