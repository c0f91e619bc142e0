# Ablation: gating on inter-teacher agreement only.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(gating=dict(mode='agreement'))
