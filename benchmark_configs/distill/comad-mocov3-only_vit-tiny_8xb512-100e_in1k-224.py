# Ablation: MoCo v3 teacher alone (keep 0.80).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(teachers=[dict(name='mocov3', checkpoint='checkpoints/vit-b-300ep.pth.tar', format='mocov3', arch='vit_base')], masking=dict(teacher_keep=[0.80]))
