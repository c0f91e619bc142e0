# Ablation: teacher masks drawn independently of the student's (not nested).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(masking=dict(nested=False))
