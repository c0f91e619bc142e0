# The MAE linear-probe head and its optimiser (He et al. 2022, main_linprobe.py), shared by the
# online and the cached probe: BatchNorm1d(affine=False, eps=1e-6) + Linear, LARS (momentum 0.9,
# trust 0.001, wd 0), blr 0.1 (lr = blr x batch / 256), 10 warm-up epochs then cosine to min_lr.
warmup_epochs = 10
blr = 0.1
min_lr = 0.0
weight_decay = 0.0
momentum = 0.9
trust_coeff = 0.001
bn = True                  # BatchNorm1d(affine=False, eps=1e-6) before the linear layer
