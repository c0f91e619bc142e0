# Ablation: teacher pair MAE + iBOT.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(teachers=[dict(name='mae', checkpoint='checkpoints/mae_pretrain_vit_base.pth', format='mae', arch='vit_base'), dict(name='ibot', checkpoint='checkpoints/checkpoint_teacher.pth', format='auto', arch='vit_base')], masking=dict(teacher_keep=[0.50, 0.65]))
