# Reference CoMAD run (docs/method.md §3): 300 epochs, global batch 4096 = 8 GPUs x 512, AdamW
# (0.9/0.95, wd 0.05), lr 1.5e-4 x 4096/256, 15 warm-up epochs, cosine, bf16.
_base_ = ['./_base_/comad_model.py', './_base_/imagenet_data.py', './_base_/default_runtime.py']
