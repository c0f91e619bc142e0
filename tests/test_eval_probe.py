"""Linear probes: cached vs online on real digits, the feature cache, the frozen-backbone check."""
import json

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import ConfigDict
from torch.utils.data import TensorDataset
from timm.models.vision_transformer import VisionTransformer

from transfer.imagenet.features import FeatureCache, assert_backbone_unchanged, backbone_snapshot, extract_features, pool_tokens
from transfer.imagenet.linear_probe import LinearProbeHead, build_lars, online_probe, train_head_on_features
from transfer.imagenet.env import DistEnv


@pytest.fixture(scope="module")
def digits():
    """Real labelled digits (sklearn), 16 px RGB tensors, stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None] / 16.0, size=16, mode="bilinear").repeat(1, 3, 1, 1)
    y = torch.tensor(d.target)
    tr, va = train_test_split(list(range(len(y))), test_size=0.2, stratify=d.target, random_state=0)
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[va], y[va])


def _vit():
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=0).eval()


def _cfg(**kw):
    c = dict(bn=True, batch_size=64, blr=100.0, weight_decay=0.0, momentum=0.9, trust_coeff=0.001, epochs=20,
             warmup_epochs=1, min_lr=0.0, log_interval=5, pooling="cls", num_workers=0, amp=None, resume=False)
    c.update(kw)
    return ConfigDict(c)


def test_cached_probe_matches_online_probe(digits, tmp_path):
    train, val = digits
    vit = _vit()
    snap = backbone_snapshot(vit)
    online, info = online_probe(vit, train, val, 10, _cfg(), DistEnv(), tmp_path / "online", seed=0, eff_batch=64)
    feats = {}
    for split, ds in (("train", train), ("val", val)):
        cache = FeatureCache(tmp_path / "cache" / split)
        cache.build(vit, ds, dict(split=split), pooling="cls", batch_size=64, chunk_size=512, log=lambda m: None)
        feats[split] = cache.load()[:2]
    _, cached, _ = train_head_on_features(*feats["train"], *feats["val"], 10, _cfg(), seed=0)
    assert_backbone_unchanged(vit, snap)
    assert info["iters"] == 20 * (len(train) // 64)
    # both learn far above chance (10 %) and agree within noise (360 val images: 1 image = 0.28 %)
    assert online["top1"] > 60 and cached["top1"] > 60
    assert abs(online["top1"] - cached["top1"]) <= 5.0, (online, cached)


class _Log:
    """A RunLog stand-in that keeps what it is given."""

    def __init__(self):
        self.lines, self.rows, self.bars = [], [], []

    def info(self, msg):
        self.lines.append(msg)

    def progress(self, total, initial=0):
        self.bars.append((total, initial))

    def scalars(self, values, step):
        self.rows.append((step, values))


def test_online_probe_resume_is_exact(digits, tmp_path):
    """Stopped mid-epoch by max_iters, then run again: the head, LARS state and metrics equal an
    uninterrupted run's bit for bit (the epoch loop the fine-tune shares)."""
    from comad.io import safe_torch_load

    train, val = digits
    cfg = _cfg(epochs=3, resume=True)
    full, info = online_probe(_vit(), train, val, 10, cfg, DistEnv(), tmp_path / "a", seed=0, eff_batch=64)
    steps = len(train) // 64
    part, _ = online_probe(_vit(), train, val, 10, cfg, DistEnv(), tmp_path / "b", seed=0, eff_batch=64,
                           max_iters=steps + 5)
    mid = safe_torch_load(tmp_path / "b" / "checkpoint_last.pth")
    assert (mid["epoch"], mid["iter_in_epoch"], mid["step"]) == (1, 5, steps + 5)
    torch.manual_seed(123)  # whatever the process did in between, the checkpoint's RNG states come back
    log = _Log()
    resumed, rinfo = online_probe(_vit(), train, val, 10, cfg, DistEnv(), tmp_path / "b", seed=0, eff_batch=64,
                                  log=log)
    assert f"epoch 1, micro-batch 5, step {steps + 5}" in log.lines[0]  # resumed, not started afresh
    assert min(step for step, _ in log.rows) == (steps + 5) // 5 * 5 + 5  # its first line: the next multiple of 5
    assert log.bars == [(3 * steps, steps + 5)]  # the console bar: all steps, the resumed ones already done
    a, b = (safe_torch_load(tmp_path / w / "checkpoint_last.pth") for w in ("a", "b"))
    assert a["step"] == b["step"] == info["iters"] == rinfo["iters"] == 3 * steps and b["epoch"] == 3
    for k, v in a["head"].items():
        assert torch.equal(v, b["head"][k]), k
    assert torch.equal(a["optimizer"]["state"][0]["momentum_buffer"], b["optimizer"]["state"][0]["momentum_buffer"])
    assert resumed == full and part != full
    with pytest.raises(ValueError, match="checkpoint_last.pth: made for"):
        online_probe(_vit(), train, val, 10, cfg, DistEnv(), tmp_path / "b", seed=0, eff_batch=64,
                     resume_key={"student_sha256": "other"})


def test_backbone_assertion_fires_on_moved_weights():
    vit = _vit()
    snap = backbone_snapshot(vit)
    assert_backbone_unchanged(vit, snap)  # untouched: passes
    with torch.no_grad():
        vit.blocks[1].mlp.fc1.weight[0, 0] += 1e-3
        vit.blocks[1].attn.proj.bias[0] += 1.0
    with pytest.raises(AssertionError, match=r"parameter 'blocks\.1\.attn\.proj\.bias' changed during probing") as e:
        assert_backbone_unchanged(vit, snap)
    # the first changed entry in state_dict order is named (attn comes before mlp in a block)
    assert "max abs diff 1" in str(e.value)


def test_backbone_assertion_fires_when_a_probe_trains_the_backbone(digits, tmp_path):
    """A probe that (wrongly) lets gradients reach the backbone is caught."""
    train, _ = digits
    vit = _vit().train()
    snap = backbone_snapshot(vit)
    head = LinearProbeHead(32, 10)
    opt = torch.optim.SGD(list(vit.parameters()) + list(head.parameters()), lr=0.1)
    x, y = train.tensors[0][:32], train.tensors[1][:32]
    F.cross_entropy(head(pool_tokens(vit, vit.forward_features(x), "cls")), y).backward()
    opt.step()
    with pytest.raises(AssertionError, match="changed during probing"):
        assert_backbone_unchanged(vit, snap)


def test_feature_cache_chunks_resume_and_key(digits, tmp_path):
    train, _ = digits
    sub = torch.utils.data.Subset(train, range(300))
    vit = _vit()
    cache = FeatureCache(tmp_path / "c")
    msgs = []
    m = cache.build(vit, sub, dict(student="a"), pooling="mean", batch_size=32, chunk_size=128, log=msgs.append)
    assert [c["count"] for c in m["chunks"]] == [128, 128, 44] and m["complete"] and m["feature_dim"] == 32
    feats, labels, _ = cache.load()
    ref_f, ref_y = extract_features(vit, torch.utils.data.DataLoader(sub, batch_size=50), "mean")
    torch.testing.assert_close(feats, ref_f)
    assert torch.equal(labels, ref_y)
    # an interrupted extraction: drop the last chunk from the manifest -> only that chunk is redone
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    manifest["chunks"] = manifest["chunks"][:2]
    manifest["complete"] = False
    (tmp_path / "c" / "manifest.json").write_text(json.dumps(manifest))
    mtime0 = (tmp_path / "c" / "chunk_00000.safetensors").stat().st_mtime_ns
    cache.build(vit, sub, dict(student="a"), pooling="mean", batch_size=32, chunk_size=128, log=msgs.append)
    assert any("resuming after 256/300" in s for s in msgs)
    assert (tmp_path / "c" / "chunk_00000.safetensors").stat().st_mtime_ns == mtime0
    torch.testing.assert_close(cache.load()[0], ref_f)
    # same key: reused; another key (e.g. pooling): rebuilt
    cache.build(vit, sub, dict(student="a"), pooling="mean", batch_size=32, chunk_size=128, log=msgs.append)
    assert "reusing 300 samples" in msgs[-1]
    cache.build(vit, sub, dict(student="a"), pooling="cls", batch_size=32, chunk_size=128, log=msgs.append)
    assert any("made for another key" in s for s in msgs)
    assert not torch.allclose(cache.load()[0], ref_f)
    # a listed chunk that vanished is named
    (tmp_path / "c" / "chunk_00001.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="chunk_00001.safetensors"):
        cache.load()


def test_lars_groups_follow_mae():
    head = LinearProbeHead(8, 3)
    opt = build_lars(head, lr=1.0)
    assert [g["always_adapt"] for g in opt.param_groups] == [True, False]
    assert [p.ndim for p in opt.param_groups[0]["params"]] == [2]
    assert not any(isinstance(m, torch.nn.BatchNorm1d) and m.affine for m in head.modules())
    assert head.bn.eps == 1e-6


def test_schedule_is_warmup_then_cosine_over_the_rest():
    from transfer.imagenet.linear_probe import build_scheduler

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=1.0)
    sched = build_scheduler(opt, epochs=4, warmup_epochs=1, steps_per_epoch=10)
    lrs = []
    for t in range(1, 41):
        sched.step_update(t)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[:10] == pytest.approx([0.1 * i for i in range(1, 11)])  # linear warm-up over epoch 0
    assert lrs[24] == pytest.approx(0.5)  # half-way through the 30 cosine steps
    assert lrs[-1] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="warmup_epochs 4 must be >= 0 and < epochs 4"):
        build_scheduler(opt, epochs=4, warmup_epochs=4, steps_per_epoch=10)
