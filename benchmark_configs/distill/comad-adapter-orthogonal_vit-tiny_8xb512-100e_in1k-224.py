# Ablation: the fitted alignment plus a trainable rotation per teacher (orthogonal parametrization,
# starting at the identity): the loss may turn each teacher's space, but a rotation cannot collapse it.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(trainable='orthogonal'))
