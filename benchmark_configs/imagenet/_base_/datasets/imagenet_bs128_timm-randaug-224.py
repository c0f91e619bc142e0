# ImageNet-1K for the fine-tune: <data_root>/imagenet/{train,val}/<class>/*.JPEG (the task sets the root),
# read by comad.data's ImageFolderDataset with timm's transforms (MAE/BEiT recipe): RandomResizedCrop
# (0.08-1) + flip + RandAugment 'rand-m9-mstd0.5-inc1' + random erasing 0.25 (pixel mode); eval: resize
# 256 / centre crop 224 (crop_pct 0.875), bicubic. Training draws come from the resumable infinite
# sampler, each sample's augmentation seeded from its draw (PerSampleSeeded): a resumed run sees the
# images and augmentations the uninterrupted one would.
data_root = 'data/imagenet'
mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
train_dataloader = dict(
    batch_size=128,  # per GPU
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='PerSampleSeeded', seed=0, dataset=dict(
        type='ClassBalancedSubset', num_samples=None, seed=0,  # num_samples: a class-balanced subset
        dataset=dict(type='ComadImageFolder', root=data_root, split='train',
                     transform=dict(kind='timm', input_size=224, is_training=True, scale=(0.08, 1.0),
                                    auto_augment='rand-m9-mstd0.5-inc1', color_jitter=None, re_prob=0.25,
                                    re_mode='pixel', re_count=1, interpolation='bicubic', mean=mean, std=std)))))
val_dataloader = dict(
    batch_size=128,
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    collate_fn=dict(type='default_collate'),
    dataset=dict(type='ComadImageFolder', root=data_root, split='val', on_corrupt='error',  # every image counts once
                 transform=dict(kind='timm', input_size=224, is_training=False, crop_pct=0.875,
                                interpolation='bicubic', mean=mean, std=std)))
val_evaluator = dict(type='TopKAccuracy', topk=(1, 5))
val_cfg = dict()
test_dataloader = val_dataloader
test_evaluator = val_evaluator
test_cfg = dict()
