# Features extracted once from centre crops of ImageNet-1K (224, bicubic, crop 0.875),
# stored in chunks (transfer.imagenet.features.FeatureCache) and shared by the cached linear probe
# and k-NN of the same student (cache_dir None: <work_dir>/../feature_cache/<key>/).
_base_ = ['./default_runtime.py']
num_gpus = 1
img_size = 224
crop_pct = 0.875
pooling = 'cls'            # 'cls' or 'mean' (of the final-norm patch tokens)
extract_batch_size = 256
chunk_size = 51200         # samples per chunk file (multiple of extract_batch_size)
cache_dir = None
