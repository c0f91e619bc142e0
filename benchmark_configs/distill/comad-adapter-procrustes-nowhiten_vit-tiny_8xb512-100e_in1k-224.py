# Alignment by per-teacher PCA to 192 dims (not whitened: each axis keeps its variance) + generalized
# orthogonal Procrustes. Rotations cannot undo a teacher's non-orthogonal linear relation to another.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(align='procrustes', whiten=False))
