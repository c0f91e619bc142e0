# The embedded demo with the DALI data path (data.backend='dali'; needs the `dali` extra). On a
# machine without CUDA DALI runs in its CPU mode. A DEMO, not a result (see the torch demo).
_base_ = ['./comad_vit-tiny-demo_1xb16-120it_photos-64.py']
data = dict(backend='dali', dali=dict(num_threads=2))
