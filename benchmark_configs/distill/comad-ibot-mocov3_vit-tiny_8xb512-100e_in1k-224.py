# Ablation: teacher pair iBOT + MoCo v3.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(teachers=[dict(name='ibot', checkpoint='checkpoints/checkpoint_teacher.pth', format='auto', arch='vit_base'), dict(name='mocov3', checkpoint='checkpoints/vit-b-300ep.pth.tar', format='mocov3', arch='vit_base')], masking=dict(teacher_keep=[0.65, 0.80]))
