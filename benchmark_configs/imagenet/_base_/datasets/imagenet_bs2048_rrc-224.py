# ImageNet-1K for MAE's online linear probe: RandomResizedCrop (0.08-1, bicubic) + flip for training,
# resize 256 / centre crop 224 for evaluation (timm transforms on comad.data's ImageFolderDataset).
# The task sets the root (<data_root>/imagenet); draws and augmentation are resumable as in the fine-tune.
data_root = 'data/imagenet'
mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
train_dataloader = dict(
    batch_size=2048,  # per GPU
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='PerSampleSeeded', seed=0, dataset=dict(
        type='ClassBalancedSubset', num_samples=None, seed=0,
        dataset=dict(type='ComadImageFolder', root=data_root, split='train',
                     transform=dict(kind='timm', input_size=224, is_training=True, scale=(0.08, 1.0), hflip=0.5,
                                    color_jitter=None, auto_augment=None, interpolation='bicubic', mean=mean,
                                    std=std)))))
# evaluated once, at the end (runner.test())
test_dataloader = dict(
    batch_size=2048,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ComadImageFolder', root=data_root, split='val', on_corrupt='error',  # every image counts once
                 transform=dict(kind='timm', input_size=224, is_training=False, crop_pct=0.875,
                                interpolation='bicubic', mean=mean, std=std)))
test_evaluator = dict(type='TopKAccuracy', topk=(1, 5))
test_cfg = dict()
