import pytest
import torch

from comad.adapters import Adapter
from comad.models.decoder import MaskedDecoder


def test_frozen_orthogonal_by_default_and_seeded():
    a = Adapter(8, 4, seed=3)
    assert not a.proj.weight.requires_grad and not a.trainable
    assert sum(p.numel() for p in a.parameters() if p.requires_grad) == 0
    w = a.proj.weight
    assert torch.allclose(w @ w.T, torch.eye(4), atol=1e-5)
    assert torch.equal(w, Adapter(8, 4, seed=3).proj.weight)
    assert not torch.equal(w, Adapter(8, 4, seed=4).proj.weight)
    x = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    out = a(x)
    z = x @ w.T  # no bias
    v = z.var(-1, unbiased=False, keepdim=True)
    expected = (z - z.mean(-1, keepdim=True)) / torch.sqrt(v + 1e-5)  # LayerNorm without affine, eps 1e-5
    assert torch.allclose(out, expected, atol=1e-5)
    assert all(not p.requires_grad for p in a.norm.parameters()) and len(list(a.norm.parameters())) == 0


def test_trainable_option():
    a = Adapter(8, 4, trainable=True)
    a(torch.randn(3, 8)).pow(2).sum().backward()
    assert a.proj.weight.grad is not None


def test_pca_init_finds_principal_directions():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 4, generator=g) * torch.tensor([0.1, 5.0, 1.0, 3.0])
    a = Adapter(4, 2, init="pca")
    assert a.needs_pca
    a.init_pca(x)
    assert not a.needs_pca
    assert torch.allclose(a.proj.weight.abs(), torch.tensor([[0.0, 1, 0, 0], [0, 0, 0, 1]]), atol=0.05)
    assert (a.proj.weight.gather(1, a.proj.weight.abs().argmax(1, keepdim=True)) > 0).all()  # sign fixed
    assert not a.proj.weight.requires_grad


def test_pca_init_of_a_teacher_narrower_than_the_student_pads_with_zero_rows():
    """A 3-wide teacher, a 5-wide student: its 3 principal directions, then 2 zero rows (an isometry)."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4000, 3, generator=g) * torch.tensor([0.5, 4.0, 2.0])
    a = Adapter(3, 5, init="pca")
    a.init_pca(x)
    w = a.proj.weight
    assert torch.allclose(w[:3].abs(), torch.tensor([[0.0, 1, 0], [0, 0, 1], [1, 0, 0]]), atol=0.05)
    assert torch.equal(w[3:], torch.zeros(2, 3)) and torch.allclose(w.T @ w, torch.eye(3), atol=1e-5)
    assert a(x[:7]).shape == (7, 5) and torch.isfinite(a(x[:7])).all()


def test_bad_init():
    with pytest.raises(ValueError, match="adapter init must be one of"):
        Adapter(4, 2, init="random")


def test_decoder_reconstructs_full_map():
    d = MaskedDecoder(in_dim=16, num_positions=9, embed_dim=8, depth=1, num_heads=2, out_dim=16)
    idx = torch.tensor([[0, 4], [3, 8]])
    assert d(torch.randn(2, 2, 16), idx).shape == (2, 9, 16)


def test_decoder_places_mask_token_at_dropped_positions():
    d = MaskedDecoder(in_dim=4, num_positions=5, embed_dim=4, depth=0, num_heads=1, out_dim=3)
    idx = torch.tensor([[1, 3]])
    tok = torch.randn(1, 2, 4)
    out = d(tok, idx)
    # without blocks, position p gets pred(norm(x_p + pos_p)) with x_p the embedded token or the mask token
    x = d.mask_token.expand(1, 5, 4).clone()
    x[0, [1, 3]] = d.embed(tok)[0]
    expected = d.pred(d.norm(x + d.pos_embed))
    assert torch.allclose(out, expected, atol=1e-6)


def test_pca_state_survives_a_checkpoint():
    a = Adapter(4, 2, init="pca")
    a.init_pca(torch.randn(50, 4))
    b = Adapter(4, 2, init="pca")
    assert b.needs_pca
    b.load_state_dict(a.state_dict())
    assert not b.needs_pca and torch.equal(a.proj.weight, b.proj.weight)


def test_set_map_and_bias():
    a = Adapter(6, 3, bias=True)
    assert a.proj.bias is not None and not a.proj.bias.requires_grad and a.proj.bias.abs().sum() == 0
    w, b = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, dtype=torch.float64)
    a.set_map(w, b)
    x = torch.randn(4, 6)
    z = x @ w.float().T + b.float()
    torch.testing.assert_close(a(x), torch.nn.functional.layer_norm(z, (3,)), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="expected"):
        a.set_map(w[:2], b[:2])
    with pytest.raises(ValueError, match="bias=True"):
        Adapter(6, 3).set_map(w, b)
    assert set(Adapter(6, 3).state_dict()) == {"pca_done", "proj.weight"}  # the earlier layout without a bias


def test_forward_is_fp32_under_bf16_autocast():
    a = Adapter(16, 8, bias=True)
    x = torch.randn(5, 16)
    ref = a(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert a.proj(x).dtype == torch.bfloat16  # autocast reaches a plain Linear
        out = a(x.bfloat16())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, a(x.bfloat16().float()), rtol=0, atol=1e-6)
    assert (ref - out).abs().max() < 0.05


def test_orthogonal_trainable_adapter_trains_a_rotation_only():
    a = Adapter(8, 4, trainable="orthogonal", bias=True)
    assert a.trainable and not a.proj.weight.requires_grad and not a.proj.bias.requires_grad
    torch.testing.assert_close(a.rotation.weight, torch.eye(4))
    x = torch.randn(10, 8)
    torch.testing.assert_close(a(x), Adapter(8, 4, bias=True)(x), rtol=0, atol=1e-6)  # identity at the start
    opt = torch.optim.SGD([p for p in a.parameters() if p.requires_grad], lr=0.5)
    for _ in range(5):
        opt.zero_grad()
        a(x)[:, 0].sum().backward()
        opt.step()
    r = a.rotation.weight
    assert not torch.allclose(r, torch.eye(4), atol=1e-3)
    torch.testing.assert_close(r @ r.T, torch.eye(4), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="adapter trainable must be one of"):
        Adapter(8, 4, trainable="yes")
