# Baseline student: a user-supplied timm ViT-Tiny checkpoint, here supervised DeiT-Tiny
# (facebookresearch/deit, deit_tiny_patch16_224-a1311bcf.pth; not shipped, no download).
# Any timm ViT state dict works the same way: the arch is inferred from tensor shapes
# (num_heads = embed_dim // 64 unless given) and the classifier head is dropped.
#   tools/linear_probe.py checkpoints/deit_tiny_patch16_224-a1311bcf.pth --protocol knn \
#       --cfg-options name=deit-tiny-supervised
baseline = dict(name='deit-tiny-supervised', kind='checkpoint',
                checkpoint='checkpoints/deit_tiny_patch16_224-a1311bcf.pth', num_heads=None,
                description='supervised DeiT-Tiny (ImageNet-1K labels), timm keys')
