import math

import pytest
import torch

from comad.losses import map_kl, token_kl


def test_token_kl_by_hand():
    y = torch.tensor([[0.0, 0.0]])
    h = torch.tensor([[0.0, math.log(3.0)]])
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert token_kl(y, h, tau=1.0).item() == pytest.approx(expected, rel=1e-6)
    # tau scales logits and multiplies by tau^2
    p = torch.softmax(y / 2, -1)[0]
    q = torch.softmax(h / 2, -1)[0]
    exp2 = 4 * sum(p[i] * math.log(p[i] / q[i]) for i in range(2))
    assert token_kl(y, h, tau=2.0).item() == pytest.approx(float(exp2), rel=1e-5)
    assert token_kl(h, h).item() == pytest.approx(0.0, abs=1e-7)


def test_token_kl_mean_over_tokens():
    torch.manual_seed(0)
    y = torch.randn(2, 5, 7)
    h = torch.randn(2, 5, 7)
    per = torch.stack([token_kl(y[b, i], h[b, i]) for b in range(2) for i in range(5)])
    assert token_kl(y, h).item() == pytest.approx(per.mean().item(), rel=1e-5)


def test_map_kl_targets_and_all_by_hand():
    Y = torch.tensor([[[0.0], [math.log(3.0)], [99.0]]])
    H = torch.tensor([[[0.0], [0.0], [5.0]]])
    valid = torch.tensor([[True, True, False]])
    exp_t = 0.25 * math.log(0.25 / 0.5) + 0.75 * math.log(0.75 / 0.5)
    assert map_kl(Y, H, valid, tau=1.0).item() == pytest.approx(exp_t, rel=1e-6)
    q0 = 1 / (2 + math.exp(5))
    exp_a = 0.25 * math.log(0.25 / q0) + 0.75 * math.log(0.75 / q0)
    assert map_kl(Y, H, valid, tau=1.0, positions="all").item() == pytest.approx(exp_a, rel=1e-5)


def test_map_kl_is_channelwise_with_tau_squared():
    torch.manual_seed(1)
    Y = torch.randn(2, 6, 3)
    H = torch.randn(2, 6, 3)
    valid = torch.ones(2, 6, dtype=torch.bool)
    tau = 4.0
    vals = []
    for b in range(2):
        for c in range(3):
            p = torch.softmax(Y[b, :, c] / tau, 0)
            q = torch.softmax(H[b, :, c] / tau, 0)
            vals.append(tau**2 * (p * (p / q).log()).sum())
    assert map_kl(Y, H, valid, tau=tau).item() == pytest.approx(torch.stack(vals).mean().item(), rel=1e-5)


def test_loss_shape_errors():
    with pytest.raises(ValueError, match="differ"):
        token_kl(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="positions must be one of"):
        map_kl(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3), torch.ones(1, 2, dtype=torch.bool), positions="some")


def test_losses_under_bf16_autocast_equal_fp32():
    g = torch.Generator().manual_seed(0)
    y, h = torch.randn(2, 7, 16, generator=g), torch.randn(2, 7, 16, generator=g)
    valid = torch.rand(2, 7, generator=g) < 0.8
    ref = token_kl(y, h), token_kl(y, h, valid=valid), map_kl(y, h, valid), map_kl(y, h, valid, positions="all")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert (y @ h[0].T).dtype == torch.bfloat16  # the context is live
        out = token_kl(y, h), token_kl(y, h, valid=valid), map_kl(y, h, valid), map_kl(y, h, valid, positions="all")
    for a, b in zip(out, ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_token_kl_skips_tokens_without_a_target_per_image():
    g = torch.Generator().manual_seed(2)
    y, h = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    valid = torch.tensor([[True, False, True, True], [False, False, False, False], [True, True, True, True]])
    per = lambda b, i: token_kl(y[b, i], h[b, i]).item()  # noqa: E731
    image0 = (per(0, 0) + per(0, 2) + per(0, 3)) / 3
    image2 = sum(per(2, i) for i in range(4)) / 4
    expected = (image0 + 0.0 + image2) / 3  # an image without targets contributes 0 and still counts
    assert token_kl(y, h, valid=valid).item() == pytest.approx(expected, rel=1e-5)
    assert token_kl(y, h, valid=torch.ones(3, 4, dtype=torch.bool)).item() == pytest.approx(token_kl(y, h).item(), rel=1e-6)
    y2 = y.clone()
    y2[~valid] = 100.0  # values where there is no target do not matter
    assert token_kl(y2, h, valid=valid).item() == pytest.approx(token_kl(y, h, valid=valid).item(), rel=1e-6)
    with pytest.raises(ValueError, match="valid"):
        token_kl(y, h, valid=valid[:, :3])
