"""Linear probes: cached vs online on real digits, the feature cache, the frozen-backbone check."""
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset
from timm.models.vision_transformer import VisionTransformer

from transfer.imagenet.features import FeatureCache, assert_backbone_unchanged, backbone_snapshot, extract_features, pool_tokens
from transfer.imagenet.models import LinearProbeHead


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


@pytest.mark.heavy
def test_cached_probe_matches_online_probe(tmp_path, tmp_path_factory, make_student):
    """The online probe trained on centre crops (no augmentation) and the cached probe learn the
    same head: both well above chance (10 %) on real digits, and within noise of each other."""
    from transfer.imagenet.tasks import IMAGENET_TASKS
    from transfer.runner import TaskRequest, run_task

    student = make_student(tmp_path / "s" / "student")
    common = (f"demo_data.data_dir={tmp_path_factory.getbasetemp() / 'digits40'}", "demo_data.per_class=40",
              "schedule.epochs=20", "schedule.base_lr=100.0", "train_dataloader.batch_size=64")
    no_aug = "train_dataloader.dataset.dataset.dataset.transform.is_training=False"
    m = {task: run_task(IMAGENET_TASKS[task], TaskRequest(student, tmp_path, tmp_path / task, None, True,
                                                          common + extra))
         for task, extra in (("imagenet-linear", (no_aug,)), ("imagenet-linear-cached", ()))}
    online, cached = m["imagenet-linear"]["metrics"], m["imagenet-linear-cached"]["metrics"]
    assert m["imagenet-linear"]["protocol"]["iters_run"] == m["imagenet-linear-cached"]["protocol"]["iters_run"] == 100
    assert online["top1"] > 30 and cached["top1"] > 30, (online, cached)
    assert abs(online["top1"] - cached["top1"]) <= 7.5, (online, cached)  # 80 val images: 1 image = 1.25 %


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
    from transfer.imagenet.models import LinearProbe
    from transfer.imagenet.optim import TimmParamGroupsConstructor

    model = LinearProbe(3, feature_dim=8)
    ow = TimmParamGroupsConstructor(dict(type="OptimWrapper", optimizer=dict(type="TimmLars", lr=1.0)),
                                    dict(mode="mae_lars"))(model)
    groups = ow.optimizer.param_groups
    assert type(ow.optimizer).__name__ == "Lars" and [g["always_adapt"] for g in groups] == [True, False]
    assert [p.ndim for p in groups[0]["params"]] == [2] and groups[1]["weight_decay"] == 0.0
    assert not any(isinstance(m, torch.nn.BatchNorm1d) and m.affine for m in model.modules())
    assert model.head.bn.eps == 1e-6
    with pytest.raises(ValueError, match="paramwise_cfg.mode 'lars'"):
        TimmParamGroupsConstructor(dict(optimizer=dict(type="TimmLars", lr=1.0)), dict(mode="lars"))


def test_layer_decay_groups_and_the_schedule_keep_timm_s_ratios(make_student, tmp_path):
    """Fine-tune: block i of L gets lr x 0.75 ** (L + 1 - i); the config's warm-up then cosine moves every
    group by the same factor (MAE's lr x lr_scale at every step)."""
    from mmengine.registry import PARAM_SCHEDULERS

    from transfer.imagenet.models import ViTClassifier
    from transfer.imagenet.optim import TimmParamGroupsConstructor
    from transfer.imagenet.config import load_task_config
    from transfer.imagenet.tasks import DEMO_CONFIGS

    cfg = load_task_config(DEMO_CONFIGS["imagenet-ft"])
    model = ViTClassifier(make_student(tmp_path / "s"), 10, img_size=32)
    ow = TimmParamGroupsConstructor(dict(type="OptimWrapper", optimizer=dict(cfg.optim_wrapper.optimizer)),
                                    dict(cfg.optim_wrapper.paramwise_cfg))(model)
    lr, depth = cfg.optim_wrapper.optimizer.lr, len(model.net.blocks)
    scales = sorted({round(g["lr"] / lr, 12) for g in ow.optimizer.param_groups})
    assert scales == pytest.approx(sorted(0.75 ** (depth + 1 - i) for i in range(depth + 2)))
    assert {g["weight_decay"] for g in ow.optimizer.param_groups} == {0.0, 0.05}
    scheds = [PARAM_SCHEDULERS.build(dict(s), default_args=dict(optimizer=ow)) for s in cfg.param_scheduler]
    ratios = []
    start = [g["initial_lr"] for g in ow.optimizer.param_groups]
    for _ in range(cfg.train_cfg.max_iters):
        ratios.append([g["lr"] / s for g, s in zip(ow.optimizer.param_groups, start)])
        for s in scheds:
            s.step()
    warm = cfg.param_scheduler[0].end
    assert all(max(r) - min(r) < 1e-9 for r in ratios[warm:])  # every group by the same factor after warm-up
    assert ratios[0][0] == pytest.approx(5e-4) and ratios[warm][0] == pytest.approx(1.0)  # warm-up from lr x 5e-4
    eta, n = 1e-6 / lr, cfg.train_cfg.max_iters - warm  # cosine towards 1e-6 x each group's lr scale
    cosine = [eta + (1 - eta) * (1 + math.cos(math.pi * t / n)) / 2 for t in range(n)]
    assert [r[0] for r in ratios[warm:]] == pytest.approx(cosine)
