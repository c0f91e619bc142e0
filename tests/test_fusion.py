"""The anchors' knobs (issue 20): per-teacher heads, UNIC's standardisation and teacher dropping."""
import pytest
import torch

from comad.distiller import CoMADDistiller
from comad.fusion import TeacherHeads, aggregate, drop_coefficients, drop_seed_of
from comad.standardize import Standardizer
from comad.teachers.synthetic import write_checkpoint

TINY_STUDENT = dict(arch=dict(embed_dim=32, depth=2, num_heads=2))


@pytest.fixture(scope="module")
def teacher_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("teachers")
    files = {}
    for i, (name, fname) in enumerate([("mae", "mae.pth"), ("ibot", "checkpoint.pth"), ("mocov3", "vit-b-300ep.pth.tar")]):
        write_checkpoint(name, d / fname, embed_dim=64, depth=2, img_size=64, seed=i)
        files[name] = str(d / fname)
    return files


def make(teacher_files, **kw):
    teachers = [dict(name=n, checkpoint=p) for n, p in teacher_files.items()]
    args = dict(teachers=teachers, student=TINY_STUDENT, decoder=dict(depth=1, num_heads=2), img_size=64,
                adapter=dict(fit_images=4))
    args.update(kw)
    return CoMADDistiller(**args)


# ------------------------------------------------------------------ standardisation
def test_standardised_maps_have_zero_mean_and_unit_variance_per_channel():
    g = torch.Generator().manual_seed(0)
    k, b, n, d = 3, 6, 10, 8
    scale = torch.tensor([1.0, 10.0, 0.1]).view(k, 1, 1, 1)
    maps = (torch.randn(k, b, n, d, generator=g) * scale + 5 * torch.randn(k, 1, 1, d, generator=g))
    seen = torch.rand(k, b, n, generator=g) < 0.6
    st = Standardizer(k, d)  # momentum 1 at the start: the first batch's own statistics
    out = st(maps, seen, progress=0.0)
    for t in range(k):
        x = out[t][seen[t]].double()  # (tokens, D)
        torch.testing.assert_close(x.mean(0), torch.zeros(d, dtype=torch.float64), atol=1e-5, rtol=0)
        torch.testing.assert_close(x.std(0, unbiased=False), torch.ones(d, dtype=torch.float64), atol=1e-4, rtol=0)
        assert (out[t][~seen[t]] == 0).all()  # unseen positions hold zeros
    # later, the moving statistics move by the momentum of that point (cosine 1 -> 0.001)
    assert st.momentum(1.0) == pytest.approx(0.001) and st.momentum(0.5) == pytest.approx((1 + 0.001) / 2)
    before = st.mean.clone()
    batch_mean = torch.stack([maps[t][seen[t]].mean(0) for t in range(k)])
    st.update(maps + 1.0, seen, progress=1.0)
    torch.testing.assert_close(st.mean[:, 0], 0.999 * before[:, 0] + 0.001 * (batch_mean + 1.0), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="model.standardize.momentum_end"):
        Standardizer(3, 4, momentum_end=0.0)


def test_standardisation_keeps_cls_statistics_apart():
    k, b, d = 2, 4, 3
    maps = torch.randn(k, b, 1 + 5, d)
    maps[:, :, 0] += 100.0  # the CLS lives elsewhere
    seen = torch.ones(k, b, 6, dtype=torch.bool)
    out = Standardizer(k, d, prefix=1)(maps, seen)
    assert out[:, :, 1:].abs().mean() < 3 and out[:, :, 0].mean(1).abs().max() < 1e-4


def test_statistics_are_checkpointed_and_a_resumed_run_continues_them_exactly(teacher_files):
    torch.manual_seed(0)
    xs = [torch.randn(2, 3, 64, 64) for _ in range(4)]

    def run(model, steps):
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
        for x in steps:
            out = model(x, mode="loss")
            opt.zero_grad()
            (out["loss_token"] + out["loss_map"]).backward()
            opt.step()
        return opt

    torch.manual_seed(1)
    ref = make(teacher_files, standardize=True)
    run(ref, xs)
    torch.manual_seed(1)
    first = make(teacher_files, standardize=True)
    opt = run(first, xs[:2])
    state = {k: v.clone() for k, v in first.state_dict().items()}
    assert {"standardizer.mean", "standardizer.std"} <= set(state)
    torch.manual_seed(99)  # a fresh process: another init, replaced by the checkpoint
    resumed = make(teacher_files, standardize=True)
    resumed.load_state_dict(state)
    opt2 = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-3)
    opt2.load_state_dict(opt.state_dict())
    for x in xs[2:]:
        out = resumed(x, mode="loss")
        opt2.zero_grad()
        (out["loss_token"] + out["loss_map"]).backward()
        opt2.step()
    for key in ("standardizer.mean", "standardizer.std", "student.blocks.0.attn.qkv.weight"):
        torch.testing.assert_close(resumed.state_dict()[key], ref.state_dict()[key], rtol=0, atol=0)


# ------------------------------------------------------------------ teacher dropping
def test_dropping_keeps_each_images_highest_loss_teacher_and_drops_the_others_at_the_rate():
    g = torch.Generator().manual_seed(0)
    k, b = 3, 20000
    losses = torch.rand(k, b, generator=g)
    c = drop_coefficients(losses, 0.5, seed=drop_seed_of(0, 7))
    top = losses.argmax(0)
    assert (c[top, torch.arange(b)] == 1).all()  # the highest-loss teacher is always kept
    others = torch.ones(k, b, dtype=torch.bool)
    others[top, torch.arange(b)] = False
    assert abs(c[others].mean().item() - 0.5) < 0.01  # the others kept with probability 1 - 0.5
    assert torch.equal(c, drop_coefficients(losses, 0.5, seed=drop_seed_of(0, 7)))  # a function of (seed, step)
    assert not torch.equal(c, drop_coefficients(losses, 0.5, seed=drop_seed_of(0, 8)))
    assert (drop_coefficients(losses, 0.0, seed=1) == 1).all()
    with pytest.raises(ValueError, match="teacher_drop"):
        drop_coefficients(losses, 1.0, seed=1)


def test_dropping_is_identical_on_every_rank():
    """Two ranks of 3 images each draw what one process draws for the 6 images of the global batch
    (rank r holds the global rows r, r + 2, ...)."""
    losses = torch.rand(3, 6)
    seed = drop_seed_of(5, 11)
    whole = drop_coefficients(losses, 0.5, seed)
    for rank in (0, 1):
        torch.testing.assert_close(drop_coefficients(losses[:, rank::2], 0.5, seed, world=2, rank=rank), whole[:, rank::2])


def test_only_kept_teachers_get_gradient():
    losses = torch.rand(3, 5, requires_grad=True)
    c = drop_coefficients(losses.detach(), 0.5, seed=3)
    aggregate(losses, c).backward()
    torch.testing.assert_close(losses.grad, c / c.sum())  # UNIC: sum c L / sum c
    assert (losses.grad[c == 0] == 0).all()


def test_per_teacher_heads_train_and_dropping_reaches_the_heads(teacher_files):
    torch.manual_seed(0)
    m = make(teacher_files, fusion=dict(mode="per-teacher", teacher_drop=0.5), standardize=True)
    assert isinstance(m.heads, TeacherHeads) and len(m.heads.heads) == 3
    trainable = {n.split(".")[0] for n, p in m.named_parameters() if p.requires_grad}
    assert trainable == {"student", "decoder", "heads"}
    x = torch.randn(4, 3, 64, 64)
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=2e-3)
    first = None
    for step in range(12):
        out = m(x, mode="loss")
        assert {"loss_token", "loss_map", "keep_mae", "err_mae"} <= set(out) and "gate_mae" not in out
        assert all(0 < float(out[f"keep_{n}"]) <= 1 for n in ("mae", "ibot", "mocov3"))
        loss = out["loss_token"] + out["loss_map"]
        first = float(loss.detach()) if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < first
    with pytest.raises(ValueError, match="per-teacher' has no consensus gating"):
        m.gate(x, m.make_masks(4, x.device), *m.teacher_targets(x, m.make_masks(4, x.device)))


def test_a_dropped_teacher_head_gets_no_gradient(teacher_files, monkeypatch):
    import comad.distiller as distiller_mod

    torch.manual_seed(0)
    m = make(teacher_files, fusion=dict(mode="per-teacher", teacher_drop=0.5))
    x = torch.randn(2, 3, 64, 64)
    m(x, mode="loss")  # the alignment's fit step

    def keep_only_first(losses, rate, seed, world=1, rank=0):
        c = torch.zeros_like(losses)
        c[0] = 1
        return c

    monkeypatch.setattr(distiller_mod, "drop_coefficients", keep_only_first)
    out = m(x, mode="loss")
    (out["loss_token"] + out["loss_map"]).backward()
    grads = [sum(p.grad.abs().sum() for p in head.parameters() if p.grad is not None) for head in m.heads.heads]
    assert grads[0] > 0 and grads[1] == 0 and grads[2] == 0


def test_fusion_options_are_checked(teacher_files):
    with pytest.raises(ValueError, match=r"model.fusion.teacher_drop needs fusion.mode='per-teacher'"):
        make(teacher_files, fusion=dict(teacher_drop=0.5))
    with pytest.raises(ValueError, match=r"model.fusion.mode must be one of"):
        make(teacher_files, fusion=dict(mode="average"))
    with pytest.raises(ValueError, match=r"model.fusion: unknown key\(s\) \['drop'\]"):
        make(teacher_files, fusion=dict(drop=0.5))
    with pytest.raises(ValueError, match=r"model.standardize must be True, False or a dict"):
        make(teacher_files, standardize="yes")
