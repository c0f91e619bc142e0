# Ablation: trainable adapters, starting from the fitted alignment (not parameter-free; the loss can
# move the targets towards the student, which invites target collapse).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(trainable=True))
