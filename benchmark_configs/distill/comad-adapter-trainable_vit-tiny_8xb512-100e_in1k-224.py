# Ablation: trainable adapters (not parameter-free; invites target collapse).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(trainable=True))
