# The demo form of ../knn_vit-tiny_k20-t0.07_in1k-224.py (`tools/run_transfer.sh --demo imagenet-knn`):
# the same k-NN on features of 32 px digits (../_base_/demo_data.py, 10 classes) cached in small chunks;
# no loader workers.
_base_ = ['../knn_vit-tiny_k20-t0.07_in1k-224.py', '../_base_/demo_data.py']
model = dict(num_classes=10)
features = dict(img_size=32, batch_size=64, chunk_size=512, num_workers=0)
