# Alignment by per-teacher whitened PCA to 192 dims + generalized orthogonal Procrustes across the teachers.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(align='procrustes', whiten=True, shrinkage=0.1))
