# The anchors' fusion (RADIO / UNIC): one light head per teacher on the student, the per-teacher
# losses averaged, instead of CoMAD's gated target (docs/method.md row 5b).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(fusion=dict(mode='per-teacher'))
