# The 100-epoch short schedule (the ablations inherit it).
_base_ = ['./comad_vit-tiny_8xb512-300e_in1k-224.py']
schedule = dict(epochs=100, warmup_epochs=5)
