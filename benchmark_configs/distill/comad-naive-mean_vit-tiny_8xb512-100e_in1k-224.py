# Ablation: naive averaging of the teachers that saw a position (the paper's baseline).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(gating=dict(mode='mean'))
