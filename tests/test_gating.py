import math

import pytest
import torch

from comad.gating import consensus_gating

R2 = math.sqrt(2.0)


def example():
    """3 teachers, 4 positions, 2 channels; teacher 1 misses p3, teacher 2 sees only p0."""
    s = torch.tensor([[[1.0, 0], [0, 1], [1, 1], [1, 0]]])
    t = torch.zeros(3, 1, 4, 2)
    t[0, 0] = torch.tensor([[1.0, 0], [1, 0], [0, 1], [2, 0]])
    t[1, 0, :3] = torch.tensor([[0.0, 1], [0, 1], [1, 1]])
    t[2, 0, 0] = torch.tensor([1.0, 1])
    seen = torch.tensor([[[1, 1, 1, 1]], [[1, 1, 1, 0]], [[1, 0, 0, 0]]], dtype=torch.bool)
    return s, t, seen


def softmax(xs):
    e = [math.exp(x - max(xs)) for x in xs]
    return [v / sum(e) for v in e]


def test_joint_sum_weights_and_target_by_hand():
    s, t, seen = example()
    g = consensus_gating(s, t, seen, mode="joint", combine="sum", temperature=0.1)
    # p0: a = (1, 0, 1/√2); c = (1/(2√2), 1/(2√2), 1/√2)
    w0 = softmax([(1 + 1 / (2 * R2)) / 0.1, (0 + 1 / (2 * R2)) / 0.1, (1 / R2 + 1 / R2) / 0.1])
    # p1: teachers 0, 1: a = (0, 1), c = (0, 0)
    w1 = softmax([0.0, 10.0])
    # p2: a = (1/√2, 1), c = (1/√2, 1/√2)
    w2 = softmax([(2 / R2) / 0.1, (1 + 1 / R2) / 0.1])
    expected = torch.tensor([[w0[0], w1[0], w2[0], 1.0], [w0[1], w1[1], w2[1], 0.0], [w0[2], 0.0, 0.0, 0.0]])
    assert torch.allclose(g.weights[:, 0], expected, atol=1e-6)
    y = torch.tensor([
        [w0[0] * 1 + w0[2] * 1, w0[1] * 1 + w0[2] * 1],
        [w1[0], w1[1]],
        [w2[1], w2[0] + w2[1]],
        [2.0, 0.0],
    ])
    assert torch.allclose(g.target[0], y, atol=1e-6)
    assert torch.allclose(g.agreement[:, 0, 3], torch.tensor([1.0, 0.0, 0.0]))  # alone -> 1 (unseen: masked)
    assert g.has_target.all()


def test_product_affinity_agreement_and_mean_modes():
    s, t, seen = example()
    prod = consensus_gating(s, t, seen, combine="product", temperature=0.1).weights[:, 0, 0]
    c = 1 / (2 * R2)
    assert torch.allclose(prod, torch.tensor(softmax([1 * c / 0.1, 0.0, (1 / R2) * (1 / R2) / 0.1])), atol=1e-6)
    aff = consensus_gating(s, t, seen, mode="affinity", temperature=0.1).weights[:, 0, 0]
    assert torch.allclose(aff, torch.tensor(softmax([10.0, 0.0, 10 / R2])), atol=1e-6)
    agr = consensus_gating(s, t, seen, mode="agreement", temperature=0.1).weights[:, 0, 0]
    assert torch.allclose(agr, torch.tensor(softmax([c * 10, c * 10, 10 / R2])), atol=1e-6)
    mean = consensus_gating(s, t, seen, mode="mean").weights[:, 0]
    assert torch.allclose(mean, torch.tensor([[1 / 3, 0.5, 0.5, 1], [1 / 3, 0.5, 0.5, 0], [1 / 3, 0, 0, 0]]), atol=1e-6)


def test_positions_without_teacher_get_no_target():
    s, t, seen = example()
    seen[:, 0, 3] = False
    g = consensus_gating(s, t, seen)
    assert g.has_target[0].tolist() == [True, True, True, False]
    assert g.weights[:, 0, 3].abs().sum() == 0 and g.target[0, 3].abs().sum() == 0
    assert torch.isfinite(g.weights).all()


def test_stop_gradient_default_and_optional():
    s, t, seen = example()
    s.requires_grad_(True)
    t.requires_grad_(True)
    g = consensus_gating(s, t, seen)
    assert not g.weights.requires_grad  # weights carry no gradient
    g.target.sum().backward()  # the fused values keep theirs (through t only)
    assert s.grad is None and t.grad is not None
    g2 = consensus_gating(s, t, seen, stop_gradient=False)
    assert g2.weights.requires_grad


@pytest.mark.parametrize("kw, msg", [(dict(mode="median"), "gating mode"), (dict(combine="max"), "gating combine"),
                                     (dict(temperature=0), "temperature must be > 0")])
def test_bad_options(kw, msg):
    s, t, seen = example()
    with pytest.raises(ValueError, match=msg):
        consensus_gating(s, t, seen, **kw)


def test_gating_under_bf16_autocast_equals_fp32():
    """mmengine's AMP runs the step under bf16 autocast; the gating must not (it runs with autocast off)."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 9, 16, generator=g)
    t = torch.randn(3, 2, 9, 16, generator=g)
    seen = torch.rand(3, 2, 9, generator=g) < 0.7
    ref = consensus_gating(s, t, seen)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.einsum("bnd,kbnd->kbn", s, t).dtype == torch.bfloat16  # autocast does reach einsum
        out = consensus_gating(s, t, seen)
    for name in ("weights", "target", "affinity", "agreement"):
        a, b = getattr(out, name), getattr(ref, name)
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
