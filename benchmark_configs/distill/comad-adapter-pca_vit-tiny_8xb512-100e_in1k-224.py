# Ablation: no alignment; each adapter initialised by the PCA of its own teacher's first-batch
# features (per teacher, so the teachers are still not in one space).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(align='none', init='pca'))
