# CoMAD model (docs/method.md §2): 3 frozen ViT-B/16 teachers -> ViT-Tiny student. Every knob is here.
# Teacher files as released, under checkpoints/ (see README "Teachers"):
#   MAE     mae_pretrain_vit_base.pth         (facebookresearch/mae)
#   iBOT    checkpoint_teacher.pth            (bytedance/ibot, ViT-B/16)
#   MoCo v3 vit-b-300ep.pth.tar               (facebookresearch/moco-v3)
teacher_root = 'checkpoints'
model = dict(
    type='CoMADDistiller',
    img_size=224,
    teachers=[  # lighter masks in this order (keep ratios below, one per teacher)
        dict(name='mae', checkpoint=teacher_root + '/mae_pretrain_vit_base.pth', format='mae', arch='vit_base'),
        dict(name='ibot', checkpoint=teacher_root + '/checkpoint_teacher.pth', format='auto', arch='vit_base'),
        dict(name='mocov3', checkpoint=teacher_root + '/vit-b-300ep.pth.tar', format='mocov3', arch='vit_base'),
    ],
    student=dict(arch='vit_tiny_patch16_224', drop_path_rate=0.0),
    decoder=dict(depth=2, num_heads=3),  # width = student width (192)
    masking=dict(student_keep=0.25, teacher_keep=[0.50, 0.65, 0.80], nested=True, teacher_keep_end=None),
    # Adapters LayerNorm(W_k t + b_k) into ONE shared space (docs/method.md row 3): fitted without
    # gradient on the tokens every teacher saw in the first fit_images images, then frozen.
    # align: 'gcca' (generalized CCA, default) | 'procrustes' (PCA + generalized Procrustes) |
    # 'none' (each teacher its own seeded map: the teachers are not comparable; the old reading).
    adapter=dict(align='gcca', shrinkage=0.1, whiten=True, fit_images=4096, init='orthogonal', trainable=False),
    gating=dict(mode='joint', combine='sum', temperature=0.1, stop_gradient=True),
    loss=dict(token_weight=1.0, map_weight=1.0, token_tau=1.0, map_tau=4.0, map_positions='targets'),
    # fusion: 'gated' (CoMAD: one consensus target per position) | 'per-teacher' (RADIO / UNIC: a
    # light head per teacher, the mean of per-teacher losses; teacher_drop: UNIC's dropping rate).
    fusion=dict(mode='gated', teacher_drop=0.0, head_hidden=None),
    standardize=False,  # True: UNIC's per-teacher, per-channel moving standardisation of the targets
    include_cls=False,  # True: the teachers' CLS tokens are one more target, matched by the student's CLS
    mask_seed=0,
    nan_policy='raise',
    # Speed (benchmarks/README.md): 'auto' compiles the whole loss computation with torch.compile
    # when training on CUDA (+39 % img/s on an H100 at 512/GPU; about a minute to compile) and
    # stays eager on the CPU (torch.compile kwargs go in compile_options=dict(...)).
    # teacher_precision='amp' is bf16 autocast with an fp32 residual
    # stream; 'bf16' holds the teachers in bf16 (+4 % more on the H100, 2.4x the naive step on a
    # CPU with AMX) at the cost of bf16 rounding of the targets.
    compile='auto',
    data_preprocessor=dict(type='ComadDataPreprocessor'),  # uint8 batches -> normalised on the device
    teacher_precision='amp',
)
