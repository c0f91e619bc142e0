# Ablation: MAE teacher alone (keep 0.50).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(teachers=[dict(name='mae', checkpoint='checkpoints/mae_pretrain_vit_base.pth', format='mae', arch='vit_base')], masking=dict(teacher_keep=[0.50]))
