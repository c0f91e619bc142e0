# The demo form of ../knn_vit-tiny_k20-t0.07_in1k-224.py (`tools/run_transfer.sh --demo imagenet-knn`):
# the same k-NN on features of 32 px digits (../_base_/demo_data.py) cached in small chunks; fp32, no
# loader workers.
_base_ = ['../knn_vit-tiny_k20-t0.07_in1k-224.py', '../_base_/demo_data.py']
img_size = 32
extract_batch_size = 64
chunk_size = 512
num_workers = 0
amp = None
