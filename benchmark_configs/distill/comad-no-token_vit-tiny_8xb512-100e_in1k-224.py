# Ablation: map-level KL only (no token-level loss).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(loss=dict(token_weight=0.0))
