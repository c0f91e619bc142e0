# Alignment by generalized CCA (the default, spelled out so that this run stays the same if the
# default changes): each teacher whitened (shrinkage 0.1), then the 192 directions all teachers share most.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(adapter=dict(align='gcca', shrinkage=0.1))
