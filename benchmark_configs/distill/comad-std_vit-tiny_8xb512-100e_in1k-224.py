# CoMAD's gated target on standardised teachers (UNIC's moving per-channel statistics, applied to
# the aligned maps before the gating; docs/method.md row 3b).
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(standardize=True)
