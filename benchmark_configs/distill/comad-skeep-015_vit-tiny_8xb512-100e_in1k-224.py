# Ablation: the student keeps 15 % of the patches.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(masking=dict(student_keep=0.15))
