# Ablation: the teachers' CLS tokens as one more target (gated like a position every teacher saw),
# matched by the student's CLS token in the token loss.
_base_ = ['./comad_vit-tiny_8xb512-100e_in1k-224.py']
model = dict(include_cls=True)
