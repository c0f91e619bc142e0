# Ablation: teachers see every patch (keep 1.0).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(masking=dict(teacher_keep=[1.0, 1.0, 1.0]))
