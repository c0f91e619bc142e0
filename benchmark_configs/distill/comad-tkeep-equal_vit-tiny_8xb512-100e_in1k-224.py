# Ablation: every teacher keeps 0.65 (no progressive lightening).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(masking=dict(teacher_keep=[0.65, 0.65, 0.65]))
