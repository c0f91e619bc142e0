# DINOv2's frozen linear probe on the last four blocks (their "ms" head: BatchNorm + 1x1 on the four
# maps concatenated), single-scale: DINOv2's +ms row adds a multi-scale + flip test, not run here.
_base_ = ['./linear_comad-vit-t-frozen_8xb2-40k_ade20k-512x512.py']
# ViT-T widths (192 each); transfer.run rescales them to the student's (protocol width_fields)
model = dict(decode_head=dict(in_channels=[192] * 4, in_index=[0, 1, 2, 3], channels=4 * 192))
protocol = dict(
    task='ade20k-linear4',
    recipe="DINOv2's frozen linear probe, last four blocks concatenated (their 'ms' head), single-scale",
    algorithm='frozen backbone; BatchNorm + 1x1 conv on the last four blocks\' patch tokens, concatenated',
    head_blocks=(8, 9, 10, 11),
)
