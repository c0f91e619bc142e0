"""The alignment puts the adapted teachers in one space, so that the gating compares like with like.

Tiny dimensions with the real ratios (teacher widths 384 / 768 and student width 192 divided by
16: 24 / 48 and 12). Teacher features are low-rank plus noise: a shared latent of rank r with a
decaying spectrum, as real ViT features have (a fast-decaying spectrum), seen through a
per-teacher linear map, plus 2 % noise. Per-teacher PCA + Procrustes aligns exactly only when
the shared signal lies in every teacher's top-d principal subspace, so its data use r = d;
generalized CCA aligns linear images at any rank (tested with r > d too). Agreement and weights
are measured on held-out tokens, not on the tokens the maps were fitted on.
"""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F

from comad.adapters import Adapter
from comad.align import Alignment, fit_alignment, fit_from_moments, moments
from comad.gating import consensus_gating

C1, C2, D = 24, 48, 12  # 384, 768, 192 divided by 16
METHODS = ["gcca", "procrustes"]


def latent(m: int, r: int, g: torch.Generator) -> torch.Tensor:
    """(m, r) shared latent with a decaying spectrum (std 0.9^i)."""
    return torch.randn(m, r, generator=g, dtype=torch.float64) * 0.9 ** torch.arange(r, dtype=torch.float64)


def view(z: torch.Tensor, width: int, g: torch.Generator, noise: float = 0.02) -> torch.Tensor:
    """A teacher's (m, width) features: a random (full column rank) linear map of the latent, plus noise."""
    mix = torch.randn(width, z.shape[1], generator=g, dtype=torch.float64)
    return z @ mix.T + 3.0 + noise * torch.randn(z.shape[0], width, generator=g, dtype=torch.float64)


def adapted(maps, feats):
    """The adapters with the fitted maps applied to (M, C_k) features: (K, M, D) float32."""
    out = []
    for (w, b), f in zip(maps, feats):
        a = Adapter(f.shape[-1], w.shape[0], bias=True)
        a.set_map(w.float(), b.float())
        out.append(a(f.float()))
    return torch.stack(out)


def gate(t: torch.Tensor, mode: str = "joint", seed: int = 0):
    """Gating of (K, M, D) teacher tokens (as M positions of one image) against a random student."""
    s = torch.randn(1, t.shape[1], t.shape[2], generator=torch.Generator().manual_seed(seed))
    return consensus_gating(s, t[:, None], torch.ones(t.shape[0], 1, t.shape[1], dtype=torch.bool), mode=mode)


@pytest.mark.parametrize("method", METHODS)
def test_identical_teachers_agree_everywhere_weigh_equally_and_fuse_to_the_teacher(method):
    g = torch.Generator().manual_seed(0)
    mix_g = torch.Generator().manual_seed(1)
    train = view(latent(3000, D, g), C2, torch.Generator().manual_seed(1))
    test = view(latent(500, D, g), C2, mix_g)
    maps = fit_alignment([train] * 3, D, method)
    t = adapted(maps, [test] * 3)
    out = gate(t)
    assert out.agreement.min() >= 0.99
    assert (out.weights - 1 / 3).abs().max() <= 1e-3
    assert torch.allclose(gate(t, "agreement").weights, torch.full_like(out.weights, 1 / 3), atol=1e-3)
    torch.testing.assert_close(out.target[0], t[0], rtol=0, atol=1e-5)


def test_seeded_projections_of_identical_teachers_do_not_agree():
    """The defect the alignment fixes: align='none' (each teacher its own seeded orthogonal map)."""
    x = view(latent(500, D, torch.Generator().manual_seed(0)), C2, torch.Generator().manual_seed(1)).float()
    t = torch.stack([Adapter(C2, D, seed=1000 + i)(x) for i in range(3)])
    assert gate(t).agreement.mean().abs() < 0.3


@pytest.mark.parametrize("method, rank", [("gcca", D), ("gcca", 2 * D), ("procrustes", D)])
def test_a_linear_image_of_another_width_agrees_after_alignment(method, rank):
    """Teacher 2 (768-like) is teacher 1 (384-like) under a random full-rank linear map."""
    g = torch.Generator().manual_seed(2)
    to_wide = torch.randn(C2, C1, generator=g, dtype=torch.float64)
    mix = torch.Generator().manual_seed(3)
    narrow = [view(latent(m, rank, g), C1, torch.Generator().manual_seed(3)) for m in (4000, 500)]
    pairs = [[x, x @ to_wide.T] for x in narrow]
    del mix
    maps = fit_alignment(pairs[0], D, method)
    t = adapted(maps, pairs[1])
    agreement = F.cosine_similarity(t[0], t[1], dim=-1)
    assert agreement.mean() >= 0.95, agreement.mean()
    # without alignment the same pair does not agree
    none = torch.stack([Adapter(C1, D, seed=1)(pairs[1][0].float()), Adapter(C2, D, seed=2)(pairs[1][1].float())])
    assert F.cosine_similarity(none[0], none[1], dim=-1).mean().abs() < 0.5


def related_and_random(m: int, g: torch.Generator) -> list[torch.Tensor]:
    """Two teachers sharing a latent (one a noisy linear image of the other) and one of its own."""
    x = view(latent(m, D, g), C1, torch.Generator().manual_seed(5))
    to_wide = torch.randn(C2, C1, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    related = x @ to_wide.T + 0.05 * torch.randn(m, C2, generator=g, dtype=torch.float64)
    return [x, related, view(latent(m, D, g), C2, torch.Generator().manual_seed(7))]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["joint", "agreement"])
def test_a_teacher_unrelated_to_the_others_is_down_weighted(method, mode):
    g = torch.Generator().manual_seed(4)
    maps = fit_alignment(related_and_random(4000, g), D, method)
    out = gate(adapted(maps, related_and_random(500, g)), mode)
    w = out.weights.mean((1, 2))
    assert w[2] < 0.2, w
    assert w[0] > 0.35 and w[1] > 0.35, w


@pytest.mark.parametrize("method", METHODS)
def test_fit_is_deterministic_and_independent_of_teacher_order(method):
    """A fixed frame: swapping two teachers swaps their maps (to rounding), refitting gives the same bits."""
    feats = related_and_random(3000, torch.Generator().manual_seed(8))
    a = fit_alignment(feats, D, method)
    b = fit_alignment([feats[1], feats[0], feats[2]], D, method)
    assert all(torch.equal(x, y) for m1, m2 in zip(a, fit_alignment(feats, D, method)) for x, y in zip(m1, m2))
    for i, j in ((0, 1), (1, 0), (2, 2)):
        torch.testing.assert_close(b[i][0], a[j][0], rtol=0, atol=1e-7)
        torch.testing.assert_close(b[i][1], a[j][1], rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_fewer_tokens_than_dimensions_drop_the_unspanned_directions(method):
    """With M < C the covariance has a null space; those directions get zero rows instead of an
    arbitrary basis, so that the maps do not depend on the order the tokens were summed in."""
    feats = related_and_random(8, torch.Generator().manual_seed(9))  # 8 tokens span 7 directions < D
    a = fit_alignment(feats, D, method)
    perm = torch.randperm(8, generator=torch.Generator().manual_seed(0))
    b = fit_alignment([f[perm] for f in feats], D, method)
    for (wa, ba), (wb, bb) in zip(a, b):
        torch.testing.assert_close(wa, wb, rtol=0, atol=1e-6)
        torch.testing.assert_close(ba, bb, rtol=0, atol=1e-5)
        assert wa[7:].abs().max() == 0 and wa[:7].abs().amax(1).min() > 0


@pytest.mark.parametrize("method", METHODS)
def test_no_shrinkage_with_fewer_tokens_than_dimensions_stays_finite(method):
    feats = related_and_random(8, torch.Generator().manual_seed(14))
    maps = fit_alignment(feats, D, method, shrinkage=0.0)
    assert all(torch.isfinite(w).all() and torch.isfinite(b).all() for w, b in maps)


def test_statistics_of_parts_add_up_to_the_whole():
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(moments(x[:15]) + moments(x[15:]), moments(x), rtol=1e-12, atol=1e-12)
    dims = [2, 4]
    whole = fit_from_moments(moments(x), dims, 2, "gcca")
    parts = fit_from_moments(moments(x[:15]) + moments(x[15:]), dims, 2, "gcca")
    for (w1, b1), (w2, b2) in zip(whole, parts):
        torch.testing.assert_close(w1, w2, rtol=0, atol=1e-9)
        torch.testing.assert_close(b1, b2, rtol=0, atol=1e-9)


def test_accumulates_then_freezes_and_a_checkpoint_resumes_without_refitting():
    feats = related_and_random(300, torch.Generator().manual_seed(10))
    steps = [[f[i * 100:(i + 1) * 100].float() for f in feats] for i in range(3)]
    a = Alignment([C1, C2, C2], D, "gcca", fit_images=24)
    a.observe(steps[0], images=8)
    assert a.pending and a.fitted_on == (8, 100)
    b = Alignment([C1, C2, C2], D, "gcca", fit_images=24)
    b.load_state_dict(a.state_dict())  # mid-accumulation: the running statistics come back
    assert b.pending
    for step in steps[1:]:
        ma, mb = a.observe(step, images=8), b.observe(step, images=8)
        assert all(torch.equal(x, y) for m1, m2 in zip(ma, mb) for x, y in zip(m1, m2))
    assert not a.pending and bool(a.done) and a.fitted_on == (24, 300)
    fresh = Alignment([C1, C2, C2], D, "gcca", fit_images=16)  # without the first step's statistics
    fresh.observe(steps[1], images=8)
    assert not torch.allclose(fresh.observe(steps[2], images=8)[1][0], ma[1][0], atol=1e-3)
    whole = fit_alignment([torch.cat([s[k] for s in steps]) for k in range(3)], D, "gcca")
    for (w1, _), (w2, _) in zip(ma, whole):
        torch.testing.assert_close(w1, w2, rtol=0, atol=1e-6)
    sd = a.state_dict()
    assert sd["_extra_state"].numel() == 0  # no statistics kept once frozen
    c = Alignment([C1, C2, C2], D, "gcca", fit_images=24)
    c.load_state_dict(sd)
    assert not c.pending
    with pytest.raises(RuntimeError, match="the fit is done"):
        c.observe(steps[0], images=8)
    with pytest.raises(ValueError, match=r"widths \[24, 48, 48\]\) need 14523"):
        Alignment([C1, C2, C2], D).set_extra_state(torch.zeros(5, dtype=torch.float64))


def test_refits_when_the_images_have_doubled_and_at_the_end():
    """A handful of fits, not one per step (each is an eigendecomposition on the CPU)."""
    feats = [f.float() for f in related_and_random(800, torch.Generator().manual_seed(13))]
    a = Alignment([C1, C2, C2], D, "gcca", fit_images=64)
    fitted = [a.observe([f[i * 100:(i + 1) * 100] for f in feats], images=8) is not None for i in range(8)]
    assert fitted == [True, True, False, True, False, False, False, True] and not a.pending  # 8, 16, 32, 64 images


@pytest.mark.parametrize("kw, msg", [
    (dict(method="cca"), "model.adapter.align must be one of"),
    (dict(fit_images=0), "model.adapter.fit_images must be an int >= 1"),
    (dict(shrinkage=1.5), "model.adapter.shrinkage must be in [0, 1)"),
])
def test_bad_options(kw, msg):
    with pytest.raises(ValueError) as e:
        Alignment([4, 4], 2, **kw)
    assert msg in str(e.value)


def test_features_of_other_widths_or_tokens_are_refused():
    with pytest.raises(ValueError, match=r"widths \[4, 3\], expected \[4, 4\]"):
        Alignment([4, 4], 2).observe([torch.zeros(5, 4), torch.zeros(5, 3)], images=1)
    with pytest.raises(ValueError, match="must be of the same tokens"):
        fit_alignment([torch.zeros(5, 4), torch.zeros(6, 4)], 2)


def _rank_fit(rank: int, world: int, init: str, feats: list[torch.Tensor], out: str) -> None:
    import torch.distributed as dist

    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    a = Alignment([f.shape[1] for f in feats], D, "gcca", fit_images=8)
    maps = a.observe([f[rank::world] for f in feats], images=4)
    torch.save([[t.clone() for t in m] for m in maps] + [a.fitted_on], f"{out}.{rank}")
    dist.destroy_process_group()


def test_two_processes_fit_what_one_fits_on_all_tokens_and_hold_the_same_bits(tmp_path):
    """Each rank holds half the tokens; the statistics are summed with one all_reduce and rank 0's
    maps are broadcast, so both ranks hold identical maps, equal to a one-process fit on all tokens."""
    import torch.multiprocessing as mp

    feats = [f.float() for f in related_and_random(400, torch.Generator().manual_seed(11))]
    out = str(tmp_path / "maps")
    mp.spawn(_rank_fit, args=(2, f"file://{tmp_path / 'init'}", feats, out), nprocs=2, join=True)
    r0, r1 = torch.load(f"{out}.0"), torch.load(f"{out}.1")
    assert r0[-1] == r1[-1] == (8, 400)
    whole = fit_alignment(feats, D, "gcca")
    for m0, m1, mw in zip(r0[:-1], r1[:-1], whole):
        assert all(torch.equal(x, y) for x, y in zip(m0, m1))
        torch.testing.assert_close(m0[0], mw[0], rtol=0, atol=1e-7)


def test_a_step_with_non_finite_features_is_left_out_of_the_fit():
    """A poisoned image must not make the maps NaN for the rest of the run (its own step's loss is
    non-finite anyway; model.nan_policy decides about it). The whole step is left out, whichever
    image it was, so that the fit does not depend on how the images are spread over ranks."""
    feats = [f.float() for f in related_and_random(300, torch.Generator().manual_seed(12))]
    steps = [[f[i * 100:(i + 1) * 100] for f in feats] for i in range(3)]
    bad = [f.clone() for f in steps[1]]
    bad[1][:10] = float("nan")
    bad[0][10:20, 0] = float("inf")
    a = Alignment([C1, C2, C2], D, "gcca", fit_images=4)
    a.observe(steps[0], images=2)
    assert a.observe(bad, images=2) is None and a.pending and a.fitted_on == (2, 100)
    maps = a.observe(steps[2], images=2)
    assert not a.pending and a.fitted_on == (4, 200)
    ref = fit_alignment([torch.cat([steps[0][k], steps[2][k]]) for k in range(3)], D, "gcca")
    for (w, b), (wr, br) in zip(maps, ref):
        torch.testing.assert_close(w, wr, rtol=0, atol=1e-9)
    pca = Adapter(C2, D, init="pca")  # the per-teacher PCA init (one step) leaves the bad rows out
    pca.init_pca(bad[1])
    assert torch.isfinite(pca.proj.weight).all()
