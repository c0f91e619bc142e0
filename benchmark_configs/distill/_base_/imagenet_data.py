# ImageNet-1K train in ImageFolder layout: data/imagenet/train/<class>/*.JPEG (or a file list).
data_root = 'data/imagenet'
train_dataloader = dict(
    batch_size=512,  # per GPU
    num_workers=10,
    persistent_workers=True,
    pin_memory=True,
    prefetch_factor=4,
    sampler=dict(type='ResumableInfiniteSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='PerSampleSeeded',  # augmentation seeded per draw: exact resume
        dataset=dict(type='ComadImageFolder', root=data_root, split='train', on_corrupt='skip',
                     # uint8 crops: the model's ComadDataPreprocessor normalises them on the GPU
                     transform=dict(kind='train', img_size=224, scale=(0.2, 1.0), hflip=0.5, normalize=False)),
    ),
)
# Who decodes and crops: 'torch' (the DataLoader workers above, PIL) or 'dali' (NVIDIA DALI:
# decode with a random-crop ROI on the GPU's JPEG decoders, the same files, order, crop ranges
# and flip; needs the `dali` extra). docs/data.md says what differs.
data = dict(
    backend='torch',
    # DALI only: CPU threads (None: num_workers), 'auto' | 'cpu' | 'gpu', batches prepared
    # ahead, file-reading threads, share of JPEGs for the hardware decoder (A100 / H100)
    dali=dict(num_threads=None, device='auto', prefetch=2, read_threads=4, hw_decoder_load=0.65),
)
