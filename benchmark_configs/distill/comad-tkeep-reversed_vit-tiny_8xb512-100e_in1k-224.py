# Ablation: heavier-to-lighter order reversed (MAE 0.80, iBOT 0.65, MoCo v3 0.50).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(masking=dict(teacher_keep=[0.80, 0.65, 0.50]))
