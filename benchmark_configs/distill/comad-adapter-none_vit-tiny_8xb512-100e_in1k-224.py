# Ablation: no alignment (the earlier reading): each teacher's own frozen, seeded orthogonal map.
# The teachers then live in unrelated spaces (cross-teacher cosines ~0.02), so the gating's
# agreement and affinity compare noise; kept to show what the alignment changes.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(align='none'))
