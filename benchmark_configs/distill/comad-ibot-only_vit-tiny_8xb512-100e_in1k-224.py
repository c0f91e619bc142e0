# Ablation: iBOT teacher alone (keep 0.65).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(teachers=[dict(name='ibot', checkpoint='checkpoints/checkpoint_teacher.pth', format='auto', arch='vit_base')], masking=dict(teacher_keep=[0.65]))
