# The embedded demo (tools/distill.sh with no config). A DEMO, not a result: small teachers
# with random weights are written on the fly in the three official checkpoint layouts (so the
# real loaders run), the data are a few real photos shipped inside scikit-image and
# scikit-learn, 64 px images, the real ViT-Tiny student (exported with 224² position embeddings). About two minutes on a 2-core CPU.
# The teachers are related by construction, so that the gating has something to find: 'ibot' is
# 'mae' with its channels permuted and rescaled (an invertible linear image of it) plus 5 % weight
# noise, 'mocov3' an independent random network. After the alignment mae and ibot agree and
# mocov3 does not, so at the positions all three saw mocov3 gets a small weight (gate_shared_mocov3
# in the log, about 0.08 against about 0.45 each). With model.adapter.align='none' the gates follow
# the seeded projections instead (one run: mae 0.12, ibot 0.54, mocov3 0.35, though mae and ibot are
# one network up to a linear map). Random networks carry no knowledge: the student learns nothing useful.
_base_ = ['./comad_vit-tiny_8xb512-300e_in1k-224.py']
demo = dict(
    teacher_dir='work_dirs/demo_teachers',
    teachers=[  # (name, official layout, file[, relation]) - see comad.engine.launch.prepare_demo_teachers
        ('mae', 'mae', 'mae_pretrain_vit_base.pth'),
        ('ibot', 'ibot', 'checkpoint.pth', dict(linear_image_of='mae', noise=0.05)),
        ('mocov3', 'mocov3', 'vit-b-300ep.pth.tar'),
    ],
    teacher_arch=dict(embed_dim=128, depth=3, num_heads=2, patch_size=16, img_size=64),
)
model = dict(
    img_size=64,
    teachers=[
        dict(name='mae', checkpoint='work_dirs/demo_teachers/mae_pretrain_vit_base.pth', format='mae', arch=None),
        dict(name='ibot', checkpoint='work_dirs/demo_teachers/checkpoint.pth', format='ibot', arch=None),
        dict(name='mocov3', checkpoint='work_dirs/demo_teachers/vit-b-300ep.pth.tar', format='mocov3', arch=None),
    ],
    decoder=dict(depth=1, num_heads=3),
    # the alignment's fit: the first 2 steps (16 images each; below 32 so that the reliability
    # suite's 4-image runs, which inherit this config, finish it in their first 6 steps)
    adapter=dict(fit_images=24),
)
train_dataloader = dict(
    batch_size=16, num_workers=0, persistent_workers=False, pin_memory=False, prefetch_factor=None,
    dataset=dict(dataset=dict(
        root='work_dirs/demo_data/photos', demo=dict(img_size=96, n_per_image=6),
        transform=dict(kind='train', img_size=64, scale=(0.2, 1.0), hflip=0.5))),
)
schedule = dict(epochs=1, warmup_epochs=0, warmup_iters=10, num_train_images=None, base_lr=1e-3, base_batch=16, max_iters=120)
gpus = 1
# what it gives on 1 process x 16
train_cfg = dict(max_iters=120)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=False, begin=0, end=10),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=10, end=120, eta_min=0.0),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=40, max_keep_ckpts=2))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(vis_backends=vis_backends)
log_processor = dict(window_size=10)
