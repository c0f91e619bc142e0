# Ablation: joint gating with affinity x agreement instead of the sum.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(gating=dict(combine='product'))
