# Ablation: adapters initialised by PCA of the first batch's teacher features.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(init='pca'))
