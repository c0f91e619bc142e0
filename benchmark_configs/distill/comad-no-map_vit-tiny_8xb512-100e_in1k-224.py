# Ablation: token-level KL only (no map-level loss).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(loss=dict(map_weight=0.0))
