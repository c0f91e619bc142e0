# UNIC's recipe on CoMAD's student: per-teacher heads, standardisation and teacher dropping (per
# image the highest-loss teacher kept, every other dropped with p = 0.5; docs/method.md row 5b).
_base_ = ['./comad-per-teacher-std_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(fusion=dict(teacher_drop=0.5))
