# Per-teacher heads + UNIC's per-teacher standardisation of the targets (moving per-channel
# statistics; docs/method.md rows 3b and 5b).
_base_ = ['./comad-per-teacher_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(standardize=True)
