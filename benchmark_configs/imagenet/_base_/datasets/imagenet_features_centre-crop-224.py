# ImageNet-1K as pooled features of centre crops (resize 256 / crop 224, bicubic), extracted once from the
# frozen student by the task (transfer.imagenet.features.FeatureCache, in chunks, resumable) and shared by
# the cached linear probe and k-NN of the same student: <work_dir>/../feature_cache/<key>/{train,val}/
# (or `features.cache_dir`). The task points the FeatureDataset entries below at those folders.
data_root = 'data/imagenet'
features = dict(img_size=224, crop_pct=0.875, interpolation='bicubic', mean=(0.485, 0.456, 0.406),
                std=(0.229, 0.224, 0.225),
                pooling='cls',  # 'cls' token or 'mean' of the final-norm patch tokens
                batch_size=256, chunk_size=51200,  # samples per chunk file (a multiple of batch_size)
                num_workers=10, amp='bf16',  # the extraction's autocast on GPUs (None: fp32)
                cache_dir=None)
test_dataloader = dict(batch_size=4096, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
                       collate_fn=dict(type='default_collate'), dataset=dict(type='FeatureDataset', cache_dir=None))
test_evaluator = dict(type='TopKAccuracy', topk=(1, 5))
test_cfg = dict()
